//go:build !linux

package blobstore

import (
	"errors"
	"fmt"
	"os"
)

// StartWriteback is a no-op on this platform (see the Linux version).
func StartWriteback(f *os.File, off, n int64) {}

// syncData is f.Sync here (see the Linux version).
func syncData(f *os.File) error { return f.Sync() }

// OpenFile is os.OpenFile (see the Linux version).
func OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}

// syncPath fsyncs a folder by name.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return nil
}

// writeData does nothing here: syncFS is unsupported, so group commits fall back to per-file
// ones (see the Linux version).
func writeData(f *os.File) error { return nil }

// syncFS is unsupported here (see the Linux version).
func syncFS(f *os.File) error { return errors.ErrUnsupported }

// openDir opens the folder p.
func openDir(p string) (*os.File, error) { return os.Open(p) }

// renameNoReplace is unsupported here: commits check for the object with os.Stat, then rename
// (see the Linux version).
func renameNoReplace(oldpath, newpath string) error { return errors.ErrUnsupported }
