package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// TempDir returns the folder inside a file:// bucket's root where writers keep temporary and
// partial files. It is on the same file system as the objects, so committing is a rename.
func TempDir(bucketDir string) string { return filepath.Join(bucketDir, TempDirName) }

// CommitFile durably moves the finished temporary file tmp (open, inside the bucket folder
// bucketDir, normally under TempDir) to key, and closes it: it syncs the file, creates the
// key's folders, renames the file into place and syncs the folders it changed, so the object
// survives a power loss once CommitFile returns. When the object already exists
// (content-addressed keys make identical content share a key) tmp is removed instead and
// existed is true. tmp is closed in every case.
func CommitFile(bucketDir string, tmp *os.File, key string) (existed bool, err error) {
	tmpPath := tmp.Name()
	if !safeKey(key) {
		_ = tmp.Close()
		return false, fmt.Errorf("commit %q: unsafe key", key)
	}
	final := filepath.Join(bucketDir, filepath.FromSlash(key))
	if _, err := os.Stat(final); err == nil {
		_ = tmp.Close()
		if err := os.Remove(tmpPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("remove duplicate temp file: %w", err)
		}
		return true, nil
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("commit %q: sync: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	if _, err := mkdirAllSynced(bucketDir, filepath.Dir(final)); err != nil {
		return false, err
	}
	if err := os.Rename(tmpPath, final); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	if err := syncPath(filepath.Dir(final)); err != nil {
		return false, err
	}
	return false, nil
}

// mkdirAllSynced creates dir (below root) and syncs the parent of every folder it created,
// so the new folder entries are durable. It returns how many folders it created.
func mkdirAllSynced(root, dir string) (int, error) {
	if _, err := os.Stat(dir); err == nil {
		return 0, nil
	}
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if d == root || d == filepath.Dir(d) {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("create folder: %w", err)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := syncPath(filepath.Dir(missing[i])); err != nil {
			return 0, err
		}
	}
	return len(missing), nil
}

// SyncDir fsyncs the folder dir, making renames and removals in it durable.
func SyncDir(dir string) error { return syncPath(dir) }
