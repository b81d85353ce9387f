//go:build unix

package fetcher

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// initQuiet prepares quiet for a new connection.
func (pc *h1Conn) initQuiet() {
	if sc, ok := pc.conn.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn() // nil when it fails: quiet then reports false
		pc.peekFn = pc.peek
		return
	}
	pc.noRaw = true
}

// quiet reports whether the idle connection pc received nothing since its last response and
// is not closed by the origin (one recv(2) with MSG_PEEK|MSG_DONTWAIT): bytes arriving on an
// idle connection (a "408 Request Timeout" some origins send before closing one) must not be
// read as the answer to the next request. A connection that cannot be checked (not a
// syscall.Conn) counts as quiet.
func (pc *h1Conn) quiet() bool {
	if pc.noRaw {
		return true
	}
	if pc.raw == nil {
		return false
	}
	pc.quietRes = false
	err := pc.raw.Read(pc.peekFn)
	return err == nil && pc.quietRes
}

// peek is quiet's recv(2), run by pc.raw.Read; it never waits for readiness.
func (pc *h1Conn) peek(fd uintptr) bool {
	var b [1]byte
	_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	pc.quietRes = err == unix.EAGAIN || err == unix.EWOULDBLOCK
	return true
}
