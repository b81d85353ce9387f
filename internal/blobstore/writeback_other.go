//go:build !linux

package blobstore

import "os"

// StartWriteback is a no-op on this platform (see the Linux version).
func StartWriteback(f *os.File, off, n int64) {}

// groupSyncSupported: no syncfs here; Committer falls back to CommitFile.
const groupSyncSupported = false

func syncFS(string) error { return nil }

// OpenFile is os.OpenFile (see the Linux version).
func OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}
