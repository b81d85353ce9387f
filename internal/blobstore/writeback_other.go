//go:build !linux

package blobstore

import (
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
