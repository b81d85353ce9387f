// Package storagefull recognises the storage errors that no retry can fix while nothing
// changes on the machine: no space left on the device (ENOSPC), a disk quota exceeded (EDQUOT),
// a read-only file system (EROFS).
package storagefull

import (
	"errors"
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
