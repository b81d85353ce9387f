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
	return linkFile(f, dst, func(fd int) error { return linkProcFD(fd, dirfd, name) })
}

// linkFile runs link with f's descriptor and returns its error as linkError does (dst: the
// name for errors).
func linkFile(f *os.File, dst string, link func(fd int) error) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if cerr := sc.Control(func(fd uintptr) { lerr = link(int(fd)) }); cerr != nil {
		return fmt.Errorf("link %s: %w", dst, cerr)
	}
	return linkError(f.Name(), dst, lerr)
}

// linkProcFD links the unnamed file open as fd as name in the folder dirfd through
// /proc/self/fd.
func linkProcFD(fd, dirfd int, name string) error {
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
}

// linkError is the error of linking the file old as dst: nil, os.ErrExist when dst exists,
// else an *os.LinkError.
func linkError(old, dst string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &os.LinkError{Op: "link", Old: old, New: dst, Err: os.ErrExist}
	}
	return &os.LinkError{Op: "link", Old: old, New: dst, Err: err}
}

// CreateUnnamed opens a new unnamed file (O_TMPFILE) for reading and writing in the folder
// dir: it has no name until a Linker links it, and vanishes when closed before. Where the
// kernel or the file system has no unnamed files the error matches errors.ErrUnsupported. It
// does not check that a Linker can link it (no /proc and no CAP_DAC_READ_SEARCH): a caller
// that depends on linking tries it once.
func CreateUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		perr := &os.PathError{Op: "open", Path: dir, Err: err}
		if unsupported(err) {
			return nil, fmt.Errorf("%w: %w", errors.ErrUnsupported, perr)
		}
		return nil, perr
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// rename is Rename: F_DUPFD_CLOEXEC.
func rename(f *os.File, name string) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if cerr := sc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return nil, cerr
	}
	if derr != nil {
		_ = f.Close() // closed as on success: the caller drops f either way
		return nil, &os.PathError{Op: "dup", Path: name, Err: derr}
	}
	_ = f.Close() // the open file stays open through nfd
	return os.NewFile(uintptr(nfd), name), nil
}

// link is Linker.Link: by path, relative to the working folder.
func (l *Linker) link(f *os.File, dst string) error {
	return linkFile(f, dst, func(fd int) error { return l.linkAt(fd, unix.AT_FDCWD, dst) })
}

// linkAt gives the unnamed file open as fd the name name relative to the folder dirfd: by
// descriptor (AT_EMPTY_PATH) where the process may, else through /proc/self/fd. The error is
// the system's (EEXIST: name exists; ENOENT: its folder is missing).
func (l *Linker) linkAt(fd, dirfd int, name string) error {
	if l.noEmptyPath.Load() {
		return linkProcFD(fd, dirfd, name)
	}
	err := unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
		// No CAP_DAC_READ_SEARCH: the kernel answers ENOENT (or EPERM). ENOENT is also a
		// missing folder of name: AT_EMPTY_PATH is given up only when /proc links where it
		// did not.
		perr := linkProcFD(fd, dirfd, name)
		if errors.Is(err, unix.EPERM) || !errors.Is(perr, unix.ENOENT) {
			l.noEmptyPath.Store(true)
		}
		return perr
	}
	return err
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
	return linkFile(f, dst, func(fd int) error { return d.linkFD(fd, filepath.Base(dst)) })
}

// linkFD gives the unnamed file open as fd (created in d) the file name name in d: by
// descriptor (AT_EMPTY_PATH) where the process may, else through /proc/self/fd. The error is
// the system's (EEXIST: name exists).
func (d *Dir) linkFD(fd int, name string) error { return d.lk.linkAt(fd, d.fd, name) }

// readFile is ReadFile: raw descriptor, reads retried on EINTR.
func (d *Dir) readFile(name string, buf []byte, want int) (int, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		k, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "read", Path: filepath.Join(d.path, name), Err: err}
		}
		if k == 0 {
			break
		}
		short := k < len(buf)-n
		n += k
		if short && n >= want {
			break
		}
	}
	return n, nil
}

// writeFile is WriteFile with an unnamed file (raw descriptor): written, linked as name (over
// an existing name: linked under a temporary name, renamed over it), closed. A failed close
// removes the name (the data may not all be there).
func (d *Dir) writeFile(name string, data []byte) error {
	path := func() string { return filepath.Join(d.path, name) }
	fd, err := unix.Openat(d.fd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if unsupported(err) {
			d.noUnnamed.Store(true)
			return d.writeNamed(name, data)
		}
		return &os.PathError{Op: "open", Path: d.path, Err: err}
	}
	closed := false
	defer func() {
		if !closed {
			_ = unix.Close(fd)
		}
	}()
	for rest := data; len(rest) > 0; {
		k, err := unix.Write(fd, rest)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: path(), Err: err}
		}
		rest = rest[k:]
	}
	err = d.linkFD(fd, name)
	if errors.Is(err, unix.EEXIST) {
		// Replacing a file: link under a temporary name, then rename over it.
		tmp := TempName(name)
		if err = d.linkFD(fd, tmp); err == nil {
			if err = unix.Renameat(d.fd, tmp, d.fd, name); err != nil {
				_ = unix.Unlinkat(d.fd, tmp, 0)
			}
		}
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: d.path, New: path(), Err: err}
	}
	closed = true
	if err := unix.Close(fd); err != nil {
		_ = unix.Unlinkat(d.fd, name, 0)
		return &os.PathError{Op: "close", Path: path(), Err: err}
	}
	return nil
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
