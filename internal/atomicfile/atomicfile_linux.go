package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// createUnnamed opens a new unnamed file in dir (O_TMPFILE). It fails where the kernel or the
// file system has no unnamed files (EOPNOTSUPP, EISDIR on kernels before 3.11), or where
// /proc is not mounted (linkUnnamed links through /proc/self/fd).
func createUnnamed(dir string) (*os.File, error) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// linkUnnamed gives the unnamed file f the name dst (which must not exist: os.ErrExist).
// linkat with AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH; the /proc path does not.
func linkUnnamed(f *os.File, dst string) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if cerr := sc.Control(func(fd uintptr) {
		lerr = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(fd)), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	}); cerr != nil {
		return fmt.Errorf("link %s: %w", dst, cerr)
	}
	if errors.Is(lerr, unix.EEXIST) {
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: os.ErrExist}
	}
	if lerr != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: lerr}
	}
	return nil
}
