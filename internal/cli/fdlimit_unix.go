//go:build unix

package cli

import "syscall"

// descriptorLimit returns the process's soft limit of open descriptors (RLIMIT_NOFILE, which Go
// raised to the hard limit at start; unlimited is the largest value), or 0 when it cannot be
// read.
func descriptorLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return uint64(l.Cur)
}
