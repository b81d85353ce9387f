//go:build linux

package blobstore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to start writing the range [off, off+n) of f to disk without
// waiting for it. Writers call it as data arrives, so that the final fsync of a large file
// finds most of it already written. Errors are ignored: it is only a hint.
func StartWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// syncData makes f's data durable (fdatasync(2): the data and the metadata needed to read
// it back, such as its size, without flushing e.g. its modification time).
func syncData(f *os.File) error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}

// OpenFile is os.OpenFile for regular files, with fewer system calls: os.OpenFile also tries
// to register every file with the network poller (two fcntl calls and an epoll_ctl that fails
// for regular files), which costs as much as the open itself for small downloads.
func OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(name, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// syncPath fsyncs a folder by name: open, fsync, close and nothing else (os.Open would also
// try to register the folder with the network poller: two fcntl calls and an epoll_ctl that
// fails, once per commit).
func syncPath(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync: %w", &os.PathError{Op: "open", Path: p, Err: err})
	}
	err = ignoringEINTR(func() error { return unix.Fsync(fd) })
	cerr := unix.Close(fd)
	if err != nil {
		return fmt.Errorf("sync %s: %w", p, &os.PathError{Op: "fsync", Path: p, Err: err})
	}
	if cerr != nil {
		return fmt.Errorf("sync %s: %w", p, &os.PathError{Op: "close", Path: p, Err: cerr})
	}
	return nil
}

// ignoringEINTR retries fn while it fails with EINTR (as the os package does).
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// writeData writes f's dirty data and waits for it (sync_file_range(2) with
// WAIT_BEFORE|WRITE|WAIT_AFTER), returning the write-back errors of f since it was opened. It
// does not make the file's metadata (its size, the blocks it was given) durable: a syncfs(2)
// must follow.
func writeData(f *os.File) error {
	const flags = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	err := ignoringEINTR(func() error { return unix.SyncFileRange(int(f.Fd()), 0, 0, flags) })
	if err != nil {
		return &os.PathError{Op: "sync_file_range", Path: f.Name(), Err: err}
	}
	return nil
}

// syncFS makes everything of f's file system durable (syncfs(2)). Since Linux 5.8 it also
// returns the file system's write-back errors since f was opened. An unsupported syncfs
// matches errors.ErrUnsupported.
func syncFS(f *os.File) error {
	err := ignoringEINTR(func() error { return unix.Syncfs(int(f.Fd())) })
	if err != nil {
		return &os.PathError{Op: "syncfs", Path: f.Name(), Err: err}
	}
	return nil
}

// openDir opens the folder p for syncFS, without registering it with the network poller.
func openDir(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// renameNoReplace renames oldpath to newpath unless newpath exists (renameat2(2) with
// RENAME_NOREPLACE): one system call where os.Stat of newpath and os.Rename (which also lstats
// newpath) are three. An existing newpath is an error matching fs.ErrExist; a kernel or file
// system without RENAME_NOREPLACE (EINVAL, ENOSYS) one matching errors.ErrUnsupported.
func renameNoReplace(oldpath, newpath string) error {
	err := ignoringEINTR(func() error {
		return unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	})
	switch err {
	case nil:
		return nil
	case unix.EINVAL, unix.ENOSYS:
		return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: errors.ErrUnsupported}
	}
	return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: err}
}
