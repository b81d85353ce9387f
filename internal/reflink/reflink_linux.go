package reflink

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func clone(dst, src *os.File) error {
	dc, err := dst.SyscallConn()
	if err != nil {
		return fmt.Errorf("reflink: %w", err)
	}
	sc, err := src.SyscallConn()
	if err != nil {
		return fmt.Errorf("reflink: %w", err)
	}
	var ioctlErr error
	cerr := dc.Control(func(dfd uintptr) {
		serr := sc.Control(func(sfd uintptr) {
			ioctlErr = unix.IoctlFileClone(int(dfd), int(sfd))
		})
		if serr != nil {
			ioctlErr = serr
		}
	})
	if cerr != nil {
		return fmt.Errorf("reflink: %w", cerr)
	}
	switch {
	case ioctlErr == nil:
		return nil
	case errors.Is(ioctlErr, unix.EOPNOTSUPP), errors.Is(ioctlErr, unix.ENOTTY), errors.Is(ioctlErr, unix.EXDEV),
		errors.Is(ioctlErr, unix.EINVAL), errors.Is(ioctlErr, unix.ENOSYS), errors.Is(ioctlErr, unix.EPERM):
		return fmt.Errorf("%w (%v)", ErrUnsupported, ioctlErr)
	}
	return fmt.Errorf("reflink: %w", ioctlErr)
}
