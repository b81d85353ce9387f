//go:build linux

package blobstore

import (
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

// groupSyncSupported: syncfs is available, so Committer can share barriers.
const groupSyncSupported = true

// syncFS flushes the whole file system holding dir (syncfs(2)) and waits for it.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	defer func() { _ = f.Close() }()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
