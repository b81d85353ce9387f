//go:build !linux

package blobstore

import "os"

// StartWriteback is a no-op on this platform (see the Linux version).
func StartWriteback(f *os.File, off, n int64) {}

// groupSyncSupported: no syncfs here; Committer falls back to CommitFile.
const groupSyncSupported = false

func syncFS(string) error { return nil }
