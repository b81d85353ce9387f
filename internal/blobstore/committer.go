package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Committer moves finished temporary files into a file:// bucket durably, like CommitFile:
// each commit makes its own file's data durable (fdatasync: bounded by the file's own data,
// not by everything dirty on the file system), renames it into place and fsyncs the folder.
// Concurrent commits share the file system's journal commits (ext4's jbd2 joins concurrent
// fsyncs into one transaction), so no user-space batching is needed: measured with 16 writers
// on a shared disk (bench/fsyncfloor -group), per-commit syncs took 0.83–1.37 s for
// 2,000 × 64 KiB, rounds of shared folder syncs 0.92–2.25 s (they serialize the waiters) and
// whole-file-system syncfs barriers 2.5–6.5 s (they also flush every other tenant's dirty
// pages). It is safe for concurrent use.
type Committer struct {
	dir string
}

// NewCommitter returns a Committer for the file:// bucket folder bucketDir.
func NewCommitter(bucketDir string) *Committer {
	return &Committer{dir: bucketDir}
}

// Dir is the bucket folder the Committer commits into.
func (c *Committer) Dir() string { return c.dir }

// Commit durably moves the finished temporary file tmp (open, inside the bucket folder, normally
// under TempDir) to key, and closes it. When the object already exists tmp is removed instead
// and existed is true. The object is durable when Commit returns nil.
func (c *Committer) Commit(tmp *os.File, key string) (existed bool, err error) {
	tmpPath := tmp.Name()
	if !safeKey(key) {
		_ = tmp.Close()
		return false, fmt.Errorf("commit %q: unsafe key", key)
	}
	final := filepath.Join(c.dir, filepath.FromSlash(key))
	if _, err := os.Stat(final); err == nil {
		_ = tmp.Close()
		if err := os.Remove(tmpPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("remove duplicate temp file: %w", err)
		}
		return true, nil
	}
	// The data must be durable before the name points at it.
	if err := syncData(tmp); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("commit %q: sync: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	// The key's folder usually exists: rename first, create the folder (durably) only when
	// it is missing.
	if err := os.Rename(tmpPath, final); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("commit %q: %w", key, err)
		}
		if _, err := mkdirAllSynced(c.dir, filepath.Dir(final)); err != nil {
			return false, fmt.Errorf("commit %q: %w", key, err)
		}
		if err := os.Rename(tmpPath, final); err != nil {
			return false, fmt.Errorf("commit %q: %w", key, err)
		}
	}
	// The new name must be durable before success is reported.
	if err := syncPath(filepath.Dir(final)); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	return false, nil
}
