package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Committer moves finished temporary files into a file:// bucket durably, like CommitFile, but
// shares the cost of durability between concurrent commits (group commit): instead of two
// fsyncs per file it waits for file-system-wide sync barriers (syncfs on Linux), and one
// barrier covers every commit that was ready when it started. With many small files written
// concurrently this is several times faster than per-file fsyncs. It is safe for concurrent use.
type Committer struct {
	dir string

	mu      sync.Mutex
	cond    *sync.Cond
	ticket  uint64 // last barrier ticket handed out
	synced  uint64 // every ticket up to this one is durable
	syncing bool   // a barrier is running
	err     error  // error of the last barrier
	errAt   uint64 // ticket range [.., errAt] the error applies to
}

// NewCommitter returns a Committer for the file:// bucket folder bucketDir.
func NewCommitter(bucketDir string) *Committer {
	c := &Committer{dir: bucketDir}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Commit durably moves the finished temporary file tmp (open, inside the bucket folder, normally
// under TempDir) to key, and closes it. When the object already exists tmp is removed instead
// and existed is true. The object is durable when Commit returns nil.
func (c *Committer) Commit(tmp *os.File, key string) (existed bool, err error) {
	if !groupSyncSupported {
		return CommitFile(c.dir, tmp, key)
	}
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
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	// The data must be durable before the name points at it.
	if err := c.barrier(); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	if err := os.Rename(tmpPath, final); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	// The new name (and any new folder) must be durable before success is reported.
	if err := c.barrier(); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	return false, nil
}

// barrier returns once everything written before it was called is durable. Concurrent callers
// share barriers: a caller arriving while one runs waits for the next one, which covers all
// callers that arrived meanwhile.
func (c *Committer) barrier() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ticket++
	mine := c.ticket
	for {
		if c.synced >= mine {
			if c.err != nil && c.errAt >= mine {
				return c.err
			}
			return nil
		}
		if !c.syncing {
			break
		}
		c.cond.Wait()
	}
	// Lead a barrier covering every ticket handed out so far.
	c.syncing = true
	target := c.ticket
	c.mu.Unlock()
	err := syncFS(c.dir)
	c.mu.Lock()
	c.syncing = false
	c.synced = target
	c.err, c.errAt = err, target
	c.cond.Broadcast()
	return err
}
