package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	return linkProc(f, unix.AT_FDCWD, dst, dst)
}

// linkProc links the unnamed file f as name in the folder dirfd through /proc/self/fd; dst is
// the name for errors.
func linkProc(f *os.File, dirfd int, name, dst string) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if cerr := sc.Control(func(fd uintptr) {
		lerr = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(fd)), dirfd, name, unix.AT_SYMLINK_FOLLOW)
	}); cerr != nil {
		return fmt.Errorf("link %s: %w", dst, cerr)
	}
	return linkError(f, dst, lerr)
}

// linkError is the error of linking f as dst: nil, os.ErrExist when dst exists, else an
// *os.LinkError.
func linkError(f *os.File, dst string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: os.ErrExist}
	}
	return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: err}
}

// openDir opens the folder path (O_PATH: the descriptor only names it) and checks once that
// /proc is mounted (linkUnnamed may link through /proc/self/fd).
func openDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	d := &Dir{path: path, fd: fd}
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		d.noUnnamed.Store(true)
	}
	return d, nil
}

// createUnnamed opens a new unnamed file in the folder (O_TMPFILE).
func (d *Dir) createUnnamed() (*os.File, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.path, Err: err}
	}
	return os.NewFile(uintptr(fd), d.path), nil
}

// unsupported reports whether the error of an O_TMPFILE open says that the kernel or the file
// system has no unnamed files.
func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL)
}

// linkUnnamed gives the unnamed file f (created by d) the name dst, in d, relative to the open
// folder: by descriptor (AT_EMPTY_PATH) where the process may, else through /proc/self/fd.
func (d *Dir) linkUnnamed(f *os.File, dst string) error {
	name := filepath.Base(dst)
	if d.noEmptyPath.Load() {
		return linkProc(f, d.fd, name, dst)
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if cerr := sc.Control(func(fd uintptr) {
		lerr = unix.Linkat(int(fd), "", d.fd, name, unix.AT_EMPTY_PATH)
	}); cerr != nil {
		return fmt.Errorf("link %s: %w", dst, cerr)
	}
	if errors.Is(lerr, unix.ENOENT) || errors.Is(lerr, unix.EPERM) {
		// No CAP_DAC_READ_SEARCH: the kernel answers ENOENT.
		d.noEmptyPath.Store(true)
		return linkProc(f, d.fd, name, dst)
	}
	return linkError(f, dst, lerr)
}

// open opens name in the folder for reading. The descriptor is not registered with the
// runtime's poller (a regular file: one syscall, not four).
func (d *Dir) open(name string) (*os.File, error) {
	path := filepath.Join(d.path, name)
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// close closes the folder.
func (d *Dir) close() error {
	if err := unix.Close(d.fd); err != nil {
		return &os.PathError{Op: "close", Path: d.path, Err: err}
	}
	return nil
}
