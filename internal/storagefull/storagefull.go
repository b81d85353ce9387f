// Package storagefull recognises the storage errors that no retry can fix while nothing
// changes on the machine: no space left on the device (ENOSPC), a disk quota exceeded (EDQUOT),
// a read-only file system (EROFS).
package storagefull

import (
	"errors"
	"strings"
	"syscall"
)

// Is reports whether err (or an error it wraps) is ENOSPC, EDQUOT or EROFS.
func Is(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}

// Describe returns a short explanation of a storage-full error for users, or "" when err is
// not one.
func Describe(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return "no space left on the device"
	case errors.Is(err, syscall.EDQUOT):
		return "disk quota exceeded"
	case errors.Is(err, syscall.EROFS):
		return "the file system is read-only"
	}
	return ""
}

// FromMessage turns the text of a storage error reported by another process (a fetcher's
// last_error: "spool: write ...: no space left on device") back into an error that Is and
// Describe recognise, by the system's wording of ENOSPC, EDQUOT and EROFS. A text with none
// of them gives an error Is does not match.
func FromMessage(msg string) error {
	e := &messageError{msg: msg}
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS} {
		if strings.Contains(msg, errno.Error()) {
			e.errno = errno
			break
		}
	}
	return e
}

// messageError is a reported storage error: its text, and the errno found in it (0: none).
type messageError struct {
	msg   string
	errno syscall.Errno
}

func (e *messageError) Error() string { return e.msg }

func (e *messageError) Unwrap() error {
	if e.errno == 0 {
		return nil
	}
	return e.errno
}
