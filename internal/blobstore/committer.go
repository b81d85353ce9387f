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
// shares the cost of durability between concurrent commits (group commit). Each commit makes
// its own file's data durable (fdatasync: bounded by the file's own data, not by everything
// dirty on the file system), renames it into place, and then waits for a shared folder
// barrier: one round fsyncs each folder that received a new name since the previous round
// once, for every commit that joined it. With many small files committed concurrently, the
// journal commits of the fdatasyncs and folder fsyncs are shared too. It is safe for
// concurrent use.
type Committer struct {
	dir string
	// syncDirFn fsyncs a folder (syncPath; tests count the calls).
	syncDirFn func(string) error

	mu      sync.Mutex
	running bool   // a barrier round is running
	next    *round // the round that starts after the running one; late callers join it
}

// round is one folder barrier shared by the callers that joined it.
type round struct {
	dirs   map[string]struct{} // folders to fsync (filled while the round waits to start)
	joined int                 // callers waiting for it
	done   chan struct{}       // closed when the round finished; err is then set
	lead   chan struct{}       // receives one caller, who runs the round
	err    error
}

// NewCommitter returns a Committer for the file:// bucket folder bucketDir.
func NewCommitter(bucketDir string) *Committer {
	return &Committer{dir: bucketDir, syncDirFn: syncPath}
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
	if err := c.syncDir(filepath.Dir(final)); err != nil {
		return false, fmt.Errorf("commit %q: %w", key, err)
	}
	return false, nil
}

// syncDir returns once dir is durable as it was when syncDir was called. Concurrent callers
// share rounds: a caller arriving while a round runs (which may have started before its
// rename) joins the next round, which one of the joined callers runs when the current one
// ends, fsyncing each folder of the round once.
func (c *Committer) syncDir(dir string) error {
	c.mu.Lock()
	if !c.running {
		c.running = true
		c.mu.Unlock()
		r := &round{dirs: map[string]struct{}{dir: {}}, done: make(chan struct{})}
		c.run(r)
		return r.err
	}
	if c.next == nil {
		c.next = &round{dirs: map[string]struct{}{}, done: make(chan struct{}), lead: make(chan struct{})}
	}
	r := c.next
	r.dirs[dir] = struct{}{}
	r.joined++
	c.mu.Unlock()
	select {
	case <-r.done:
	case <-r.lead:
		c.run(r)
	}
	return r.err
}

// run performs round r, then hands the next round (if anyone joined it) to one of its callers.
func (c *Committer) run(r *round) {
	for d := range r.dirs {
		if err := c.syncDirFn(d); err != nil && r.err == nil {
			r.err = err
		}
	}
	close(r.done)
	c.mu.Lock()
	n := c.next
	c.next = nil
	if n == nil {
		c.running = false
	}
	c.mu.Unlock()
	if n != nil {
		n.lead <- struct{}{} // its creator at least is waiting for done or lead
	}
}
