//go:build unix

package fetcher

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// quiet reports whether the idle connection pc received nothing since its last response and
// is not closed by the origin (one recv(2) with MSG_PEEK|MSG_DONTWAIT): bytes arriving on an
// idle connection (a "408 Request Timeout" some origins send before closing one) must not be
// read as the answer to the next request. A connection that cannot be checked counts as quiet.
func (pc *h1Conn) quiet() bool {
	sc, ok := pc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		quiet = err == unix.EAGAIN || err == unix.EWOULDBLOCK
		return true // never wait for readiness
	})
	return err == nil && quiet
}
