package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/clock"
)

// SyncMode is how a Committer makes its commits durable. Its text form ("per-file", "group")
// is the fetchers' --blob-sync flag.
type SyncMode uint8

const (
	// SyncPerFile makes each commit durable on its own: fdatasync of the file, rename, fsync of
	// the object's folder. It needs nothing beyond POSIX and its latency depends only on the
	// commit's own file, but every commit costs its own disk flushes.
	SyncPerFile SyncMode = iota + 1
	// SyncGroup batches concurrent commits (Linux: syncfs(2)): the commits waiting when a group
	// starts (at most MaxGroup) share two whole-file-system syncs. A commit of LargeCommit
	// bytes or more (CommitSized) is made durable as with SyncPerFile. Where syncfs(2) does not
	// exist it falls back to SyncPerFile.
	SyncGroup
)

// DefaultSyncMode is the fetchers' default: SyncGroup. Measured on the 2-core VM (ext4 without
// a journal on a virtio disk, where every block request is a VM exit; bench/ANALYSIS.md,
// "Group commit with syncfs"): `paperfetch get` of 10,000 × 20 KiB at the fetchers' defaults
// (4 alternating rounds) took 9.5 s and 7.3 CPU-s with SyncGroup against 12.6 s and 10.0 CPU-s
// with SyncPerFile; 10,000 bare commits by 16 writers (bench/fsyncfloor -group) took 2.7 block
// requests per file against 5.8, 0.91 CPU-s against 1.57. The price: syncfs(2) also writes every other
// process's dirty pages of the same file system, so a group waits for them: beside a `dd` of
// 1 GiB without sync, 2,000 commits took 1.07 s in groups against 0.68 s per file. Choose
// SyncPerFile for a bucket on a disk shared with heavy writers.
const DefaultSyncMode = SyncGroup

// LargeCommit is the size from which a SyncGroup commit is made durable on its own (as
// SyncPerFile does) when its size is known (CommitSized): a large file's own data is most of
// what its flushes write (one fdatasync, one folder fsync: little beside it), while syncfs(2)
// would also write every other dirty page of the file system, which for `paperfetch get` are
// the output copies its downloads write as they receive them (as large as the blobs). B2
// (4 × 512 MiB, 3 alternating rounds): 3.85–4.52 s per file against 6.53–8.95 s in groups,
// where the groups' syncfs wrote the 2 GiB of output copies too (bench/ANALYSIS.md, "get
// writes each output PDF while it downloads it").
const LargeCommit = 8 << 20

// MaxGroup bounds the commits of one group: each holds an open file until its group ends,
// and a larger group makes its first waiter wait longer for gains that are already small (a
// group holds about half the commits in flight: some 32 per fetcher at the default
// --pending-commits of 64; bench/ANALYSIS.md). Commits beyond it wait for the next group.
const MaxGroup = 256

// MaxWindow bounds CommitterOptions.Window: every commit may wait that much longer for its
// group to start.
const MaxWindow = 100 * time.Millisecond

// CommitterOptions tunes the groups of a SyncGroup Committer (NewCommitterWith). The zero value
// is NewCommitter's: no window, a group starts as soon as the previous one ended.
type CommitterOptions struct {
	// Window is the gathering window (0 to MaxWindow; the fetchers' --blob-sync-window): a
	// group starts no sooner than Window after the previous group started, so that the
	// commits arriving meanwhile share its two syncfs(2) calls instead of each group taking
	// whatever queued while the previous one ran. A commit waits at most Window longer. 0
	// starts a group as soon as the previous one ended.
	Window time.Duration
	// StartAt ends the window early: a group starts at once when this many commits are
	// queued (0 or more than MaxGroup: MaxGroup). The fetchers set it to half their
	// --pending-commits, so that commits waiting for a window never fill the pending queue
	// and hold a download slot back.
	StartAt int
	// Clock times the window (nil: the wall clock).
	Clock clock.Clock
}

// String returns the mode's flag value ("per-file", "group"), or "SyncMode(N)" for an unknown
// value.
func (m SyncMode) String() string {
	switch m {
	case SyncPerFile:
		return "per-file"
	case SyncGroup:
		return "group"
	}
	return fmt.Sprintf("SyncMode(%d)", uint8(m))
}

// Valid reports whether m is one of the modes.
func (m SyncMode) Valid() bool { return m == SyncPerFile || m == SyncGroup }

// MarshalText returns the mode's flag value.
func (m SyncMode) MarshalText() ([]byte, error) {
	if !m.Valid() {
		return nil, fmt.Errorf("unknown sync mode %d", uint8(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText parses a flag value: "per-file" or "group".
func (m *SyncMode) UnmarshalText(b []byte) error {
	switch string(b) {
	case "per-file":
		*m = SyncPerFile
	case "group":
		*m = SyncGroup
	default:
		return fmt.Errorf("want per-file or group, got %q", b)
	}
	return nil
}

// Committer moves finished temporary files into a file:// bucket durably, like CommitFile. It
// is safe for concurrent use; in SyncGroup mode concurrent commits are batched.
//
// SyncPerFile: each commit makes its own file's data durable (fdatasync: bounded by the file's
// own data, not by everything dirty on the file system), renames it into place and fsyncs the
// folder. On ext4 without a journal nothing joins these flushes: 10,000 × 20 KiB committed by
// 16 writers cost 5.6 block requests per file (bench/fsyncfloor -group), and fdatasync and
// the folder fsync were 21% of all CPU samples of a `paperfetch get`. A commit that finds its
// object already there (a duplicate) fsyncs the object and its folder before it reports it: a
// concurrent commit may not have made them durable yet.
//
// SyncGroup: there is no long-lived goroutine. A commit queues itself; the first one that finds
// no group running leads: it takes every queued commit (at most MaxGroup, itself first), runs
// the group, wakes the others with their own results, and hands the lead to the oldest commit
// still queued (which queued while the group ran), so a caller leads at most one group. A
// group
//
//  1. writes each file's data and waits for it (sync_file_range(2) WAIT_BEFORE|WRITE|WAIT_AFTER,
//     which also reports that file's own write-back errors to its own commit only);
//  2. syncfs(2): the files' data and inodes are durable before any name points at them;
//  3. renames each file into place, where no object of the key exists (renameat2(2) with
//     RENAME_NOREPLACE, one system call), creating its folder when missing (made durable by
//     step 4); an object that already exists is left alone: the temporary file is removed and
//     existed is true; a rename failure fails only that commit. An unnamed file (CommitUnnamed)
//     is linked into place instead (linkat(2), which never replaces), with nothing to remove
//     when the object exists;
//  4. syncfs(2) again, which began after every rename and folder creation of the group, then
//     reports.
//
// With a gathering window (CommitterOptions.Window, NewCommitterWith) a leader first waits
// until the window after the previous group's start has passed, or until StartAt commits are
// queued, so that under load a group carries what arrived in the window rather than only what
// queued while the previous group ran.
//
// A failed syncfs fails every commit of the group, and objects the group renamed into place
// are removed again (their durability is unknown: they must not be reported). syncfs(2)
// returns the file system's write-back errors only since Linux 5.8 (before, only errors of
// its own flush); the data's errors come from step 1 in any case. syncfs also writes back other
// processes' dirty pages of the same file system, so a group's latency depends on them
// (measured in bench/ANALYSIS.md). Where syncfs is unsupported (not Linux, or ENOSYS), the
// first group falls back to SyncPerFile for good.
type Committer struct {
	dir  string
	root string // dir, cleaned, ending in a separator: an object's path is root + its key
	mode SyncMode

	// syncFS makes everything of f's file system durable (syncfs(2)); a field so that tests can
	// make it fail.
	syncFS func(f *os.File) error
	// syncDir fsyncs a folder by name (syncPath); a field so that tests can see the calls.
	syncDir func(p string) error
	// syncFile fsyncs an open file, its inode included ((*os.File).Sync); a field so that tests
	// can see the calls.
	syncFile func(f *os.File) error
	// maxGroup bounds a group (MaxGroup; smaller in tests).
	maxGroup int
	// queued, when set (tests), is called with mu held after a commit queued, with the number
	// of commits queued.
	queued func(n int)
	// ranGroup, when set (tests), is called by a leader with the size of the group it took.
	ranGroup func(n int)
	// renameat2, when set (tests), replaces renameNoReplace (the system call).
	renameat2 func(oldpath, newpath string) error
	// linker names unnamed files (CommitUnnamed).
	linker atomicfile.Linker

	// window, startAt and clk are CommitterOptions (startAt within 1 to maxGroup at use).
	window  time.Duration
	startAt int
	clk     clock.Clock

	noSyncFS    atomic.Bool // syncfs(2) is unsupported: commit per file
	noRenameat2 atomic.Bool // renameat2(2) RENAME_NOREPLACE is unsupported: os.Stat, then rename

	mu      sync.Mutex
	queue   []*member // waiting commits, oldest first; at most one per caller blocked in Commit
	running bool      // a leader is running a group (or handing over the lead)
	// lastStart is when the last group started, on clk (zero: none yet; only with a window).
	lastStart time.Time
	// full, while a leader waits for the window, is closed (and set to nil) by the commit that
	// makes startAt commits queued.
	full chan struct{}
}

// member is one commit of a group.
type member struct {
	tmp     *os.File
	unnamed bool // tmp has no name (CommitUnnamed): linked into place, not renamed
	key     string
	final   string
	// wake receives once (it has room for one): the result is set, or lead is.
	wake chan struct{}
	lead bool // this commit leads the next group (set before wake)

	existed bool
	renamed bool // renamed (or linked) into place by this group
	err     error
	retry   bool // syncfs is unsupported: commit per file
}

// NewCommitter returns a Committer for the file:// bucket folder bucketDir that makes commits
// durable as mode says (an invalid mode is DefaultSyncMode).
func NewCommitter(bucketDir string, mode SyncMode) *Committer {
	return NewCommitterWith(bucketDir, mode, CommitterOptions{})
}

// NewCommitterWith is NewCommitter with the groups tuned by opts (a Window outside 0 to
// MaxWindow is clamped to it).
func NewCommitterWith(bucketDir string, mode SyncMode, opts CommitterOptions) *Committer {
	if !mode.Valid() {
		mode = DefaultSyncMode
	}
	root := filepath.Clean(bucketDir)
	if !strings.HasSuffix(root, string(filepath.Separator)) {
		root += string(filepath.Separator)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	return &Committer{
		dir: bucketDir, root: root, mode: mode, syncFS: syncFS, syncDir: syncPath, syncFile: (*os.File).Sync, maxGroup: MaxGroup,
		window: min(max(opts.Window, 0), MaxWindow), startAt: opts.StartAt, clk: opts.Clock,
	}
}

// Dir is the bucket folder the Committer commits into.
func (c *Committer) Dir() string { return c.dir }

// Mode is how the Committer makes commits durable (as asked: SyncGroup even where it falls back
// to per-file commits).
func (c *Committer) Mode() SyncMode { return c.mode }

// Commit durably moves the finished temporary file tmp (open, inside the bucket folder, normally
// under TempDir) to key, and closes it. When the object already exists tmp is removed instead
// and existed is true. The object is durable when Commit returns nil. On an error the
// temporary file may be left (closed): the caller removes it.
func (c *Committer) Commit(tmp *os.File, key string) (existed bool, err error) {
	return c.CommitSized(tmp, key, -1)
}

// CommitSized is Commit of a temporary file known to hold size bytes (-1: unknown): in
// SyncGroup mode a file of LargeCommit bytes or more is committed on its own (SyncPerFile).
func (c *Committer) CommitSized(tmp *os.File, key string, size int64) (existed bool, err error) {
	return c.commit(tmp, false, key, size)
}

// CommitUnnamed is CommitSized of an unnamed temporary file (atomicfile.CreateUnnamed, O_TMPFILE,
// on the bucket's file system, normally in TempDir): it is linked into place (linkat(2)) where
// CommitSized renames, with the same durability order (its data and inode durable before the
// name points at it, the name durable before CommitUnnamed returns), and when the object
// already exists there is no temporary name to remove: the file vanishes when closed. It saves
// the temporary name's directory entry (a create inserts it, the rename removes it): measured
// in bench/ANALYSIS.md ("Unnamed spool files").
func (c *Committer) CommitUnnamed(tmp *os.File, key string, size int64) (existed bool, err error) {
	return c.commit(tmp, true, key, size)
}

// commit is CommitSized (unnamed: CommitUnnamed).
func (c *Committer) commit(tmp *os.File, unnamed bool, key string, size int64) (existed bool, err error) {
	if !safeKey(key) {
		_ = tmp.Close()
		return false, fmt.Errorf("commit %q: unsafe key", key)
	}
	// filepath.Join without its Clean pass over the whole path: a safe key is clean.
	final := c.root + filepath.FromSlash(key)
	if c.mode == SyncGroup && !c.noSyncFS.Load() && size < LargeCommit {
		m := &member{tmp: tmp, unnamed: unnamed, key: key, final: final, wake: make(chan struct{}, 1)}
		c.commitGroup(m)
		if !m.retry {
			return m.existed, m.err
		}
	}
	return c.commitPerFile(tmp, unnamed, key, final)
}

// commitPerFile is a SyncPerFile commit (unnamed: of an unnamed file, linked into place).
func (c *Committer) commitPerFile(tmp *os.File, unnamed bool, key, final string) (existed bool, err error) {
	tmpPath := tmp.Name()
	if _, err := os.Stat(final); err == nil {
		_ = tmp.Close()
		if unnamed {
			// Nothing to remove: the file vanishes with its descriptor.
		} else if err := os.Remove(tmpPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("remove duplicate temp file: %w", err)
		}
		// The object may have been renamed into place by a concurrent commit that has not
		// synced its folder yet: its name must be durable before success is reported (its
		// data already is: every commit syncs the data before the rename), and so must its
		// inode (syncObject).
		if err := c.syncObject(final); err != nil {
			return true, fmt.Errorf("commit %q: %w", key, err)
		}
		if err := c.syncDir(filepath.Dir(final)); err != nil {
			return true, fmt.Errorf("commit %q: %w", key, err)
		}
		return true, nil
	}
	// The data must be durable before the name points at it.
	if err := syncData(tmp); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("commit %q: sync: %w", key, err)
	}
	if unnamed {
		existed, _, err = c.place(tmp, true, final, true)
		if err == nil && !existed {
			// The link raised the file's link count from 0: that must be durable with the
			// name (rename leaves it at 1). Only the inode is left to write.
			if err = c.syncFile(tmp); err != nil {
				_ = os.Remove(final)
				err = fmt.Errorf("sync: %w", err)
			}
		}
		if cerr := tmp.Close(); err == nil && cerr != nil && !existed {
			_ = os.Remove(final)
			err = cerr
		}
		if err != nil {
			return false, fmt.Errorf("commit %q: %w", key, err)
		}
	} else {
		if err := tmp.Close(); err != nil {
			return false, fmt.Errorf("commit %q: %w", key, err)
		}
		existed, _, err = c.place(tmp, false, final, true)
		if err != nil {
			return false, fmt.Errorf("commit %q: %w", key, err)
		}
	}
	if existed && !unnamed {
		// Renamed into place by a concurrent commit since the check above.
		if err := os.Remove(tmpPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("remove duplicate temp file: %w", err)
		}
	}
	if existed {
		// Placed by a concurrent commit since the check above (see syncObject).
		if err := c.syncObject(final); err != nil {
			return true, fmt.Errorf("commit %q: %w", key, err)
		}
	}
	// The new name (or the concurrent commit's) must be durable before success is reported.
	if err := c.syncDir(filepath.Dir(final)); err != nil {
		return existed, fmt.Errorf("commit %q: %w", key, err)
	}
	return existed, nil
}

// syncObject fsyncs the object final, found in place by a per-file commit of the same key
// (existed): a concurrent commit of an unnamed file (CommitUnnamed) links the object first and
// fsyncs its inode after (its link count went from 0 to 1; on disk it may still be 0), or a
// group leaves that to its second syncfs, so the object is durable only once its inode is
// too. An inode that is already durable costs an open and an fsync with nothing to write, on
// duplicates only.
func (c *Committer) syncObject(final string) error {
	f, err := OpenFile(final, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	err = c.syncFile(f)
	cerr := f.Close()
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("sync: %w", cerr)
	}
	return nil
}

// place moves the temporary file tmp (closed, by its name tmp.Name(); unnamed: open, no name)
// to final unless an object is already there: then existed is true and a named tmp is left for
// the caller to remove. A named file: one renameat2(2) with RENAME_NOREPLACE where the kernel
// and file system have it, else os.Stat of final, then os.Rename. An unnamed file: one
// linkat(2), which never replaces. The key's folder usually exists: place renames first and
// creates the folder only when the rename finds it missing. With syncParents (per-file
// commits) the entries of the folders it creates are synced (mkdirAllSynced); otherwise they
// are left to the group's second syncfs(2), which runs when createdDir is set.
func (c *Committer) place(tmp *os.File, unnamed bool, final string, syncParents bool) (existed, createdDir bool, err error) {
	tmpPath := tmp.Name()
	move := func() error {
		if unnamed {
			return c.linker.Link(tmp, final)
		}
		return c.renameNoReplace(tmpPath, final)
	}
	err = move()
	if errors.Is(err, fs.ErrNotExist) {
		// The folder is missing (or tmpPath is gone: then the second rename fails too).
		dir := filepath.Dir(final)
		if syncParents {
			n, err := mkdirAllSynced(c.dir, dir)
			if err != nil {
				return false, n > 0, err
			}
			createdDir = n > 0
		} else {
			switch err := os.Mkdir(dir, 0o755); {
			case err == nil:
				createdDir = true
			case errors.Is(err, fs.ErrNotExist):
				createdDir = true // MkdirAll may have created some before failing
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return false, createdDir, fmt.Errorf("create folder: %w", err)
				}
			case !errors.Is(err, fs.ErrExist):
				return false, false, fmt.Errorf("create folder: %w", err)
			}
		}
		err = move()
		if errors.Is(err, fs.ErrNotExist) {
			// tmpPath is gone (another fetcher finished its URL and removed it): the commit
			// still succeeds when the identical content is stored (the kernel reports the
			// missing source before an existing target).
			if _, serr := os.Stat(final); serr == nil {
				return true, createdDir, nil
			}
		}
	}
	if errors.Is(err, fs.ErrExist) {
		return true, createdDir, nil
	}
	return false, createdDir, err
}

// renameNoReplace renames tmpPath to final unless final exists (an error matching
// fs.ErrExist). Where RENAME_NOREPLACE is unsupported it checks with os.Stat, then renames (a
// concurrent commit of the same key may then replace the object with identical content).
func (c *Committer) renameNoReplace(tmpPath, final string) error {
	if !c.noRenameat2.Load() {
		rename := renameNoReplace
		if c.renameat2 != nil {
			rename = c.renameat2
		}
		err := rename(tmpPath, final)
		if !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
		c.noRenameat2.Store(true)
	}
	if _, err := os.Stat(final); err == nil {
		return &os.LinkError{Op: "rename", Old: tmpPath, New: final, Err: fs.ErrExist}
	}
	return os.Rename(tmpPath, final)
}

// commitGroup queues m and returns when its group has run (m's result set), leading a group
// itself when no group is running or when the lead is handed to it.
func (c *Committer) commitGroup(m *member) {
	c.mu.Lock()
	c.queue = append(c.queue, m)
	if c.queued != nil {
		c.queued(len(c.queue))
	}
	if c.full != nil && len(c.queue) >= c.startAtLocked() {
		close(c.full)
		c.full = nil
	}
	lead := !c.running
	c.running = true
	c.mu.Unlock()
	if !lead {
		<-m.wake
		if !m.lead {
			return
		}
	}
	// m is the oldest queued commit: a leader found the queue empty (no group was running, so
	// nothing was queued) or was handed the lead as the queue's first.
	c.mu.Lock()
	c.gatherLocked()
	n := min(len(c.queue), c.maxGroup)
	group := make([]*member, n)
	copy(group, c.queue)
	rest := copy(c.queue, c.queue[n:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	c.mu.Unlock()

	ran := false
	defer func() {
		if !ran {
			// The group panicked (the panic goes on, and may be recovered, e.g. by a gRPC
			// handler's): its commits fail, their files are closed, and the lead is handed
			// over, so that no waiter and no later commit blocks for good.
			for _, o := range group {
				if o.err == nil {
					o.err = fmt.Errorf("commit %q: group commit panicked", o.key)
					o.retry = false
					_ = o.tmp.Close() // an error when step 3 closed it already
				}
			}
		}
		c.mu.Lock()
		if len(c.queue) > 0 {
			next := c.queue[0]
			next.lead = true
			next.wake <- struct{}{}
		} else {
			c.running = false
		}
		c.mu.Unlock()
		for _, o := range group[1:] {
			o.wake <- struct{}{}
		}
	}()
	if c.ranGroup != nil {
		c.ranGroup(n)
	}
	c.runGroup(group)
	ran = true
}

// startAtLocked is the queue length that starts a group at once (CommitterOptions.StartAt).
func (c *Committer) startAtLocked() int {
	if c.startAt <= 0 || c.startAt > c.maxGroup {
		return c.maxGroup
	}
	return c.startAt
}

// gatherLocked is the gathering window (CommitterOptions.Window), run by a leader with c.mu
// held before it takes its group: while the last group started less than the window ago and
// fewer than startAt commits are queued, it waits (c.mu released) until the window ends on
// c.clk or a commit fills the queue to startAt. It records the new group's start.
func (c *Committer) gatherLocked() {
	if c.window <= 0 {
		return
	}
	now := c.clk.Now()
	if wait := c.lastStart.Add(c.window).Sub(now); !c.lastStart.IsZero() && wait > 0 && len(c.queue) < c.startAtLocked() {
		full := make(chan struct{})
		c.full = full
		c.mu.Unlock()
		t := c.clk.NewTimer(wait)
		select {
		case <-t.C():
		case <-full:
		}
		t.Stop()
		c.mu.Lock()
		if c.full == full {
			c.full = nil
		}
		now = c.clk.Now()
	}
	c.lastStart = now
}

// runGroup makes the group's commits durable (see Committer) and sets each one's result.
func (c *Committer) runGroup(group []*member) {
	// 1. Each file's data, with its own errors.
	live := 0
	for _, m := range group {
		if err := writeData(m.tmp); err != nil {
			_ = m.tmp.Close()
			m.err = fmt.Errorf("commit %q: sync: %w", m.key, err)
			continue
		}
		live++
	}
	dir, err := openDir(c.dir)
	if err != nil {
		c.failGroup(group, fmt.Errorf("group sync: %w", err))
		return
	}
	defer func() { _ = dir.Close() }()
	// 2. The data and inodes, before any name points at them.
	if live > 0 {
		if err := c.syncFS(dir); err != nil {
			if errors.Is(err, errors.ErrUnsupported) {
				c.noSyncFS.Store(true)
				for _, m := range group {
					if m.err == nil {
						m.retry = true // its file is still open
					}
				}
				return
			}
			c.failGroup(group, fmt.Errorf("group sync: %w", err))
			return
		}
	}
	// 3. The names.
	named := false
	for _, m := range group {
		if m.err != nil {
			continue
		}
		var existed, createdDir bool
		var err error
		if m.unnamed {
			existed, createdDir, err = c.placeUnnamed(m)
		} else {
			existed, createdDir, err = c.placeNamed(m)
		}
		// An existing object found is made durable by step 4 too, whoever renamed it.
		named = named || createdDir || existed
		m.existed = existed
		if err != nil {
			m.err = fmt.Errorf("commit %q: %w", m.key, err)
			continue
		}
		if !existed {
			m.renamed, named = true, true
		}
	}
	if !named {
		return // every commit failed on its own, and no folder was created
	}
	// 4. The names are durable (and an existing object found in step 3, whoever renamed it),
	// with the folders step 3 created.
	if err := c.syncFS(dir); err != nil {
		c.failGroup(group, fmt.Errorf("group sync: %w", err))
	}
}

// placeNamed is step 3 of a group for a named file: closed, renamed into place (or removed
// when the object exists).
func (c *Committer) placeNamed(m *member) (existed, createdDir bool, err error) {
	tmpPath := m.tmp.Name()
	if err := m.tmp.Close(); err != nil {
		return false, false, err
	}
	existed, createdDir, err = c.place(m.tmp, false, m.final, false)
	if err == nil && existed {
		if rerr := os.Remove(tmpPath); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return true, createdDir, fmt.Errorf("remove duplicate temp file: %w", rerr)
		}
	}
	return existed, createdDir, err
}

// placeUnnamed is step 3 of a group for an unnamed file: linked into place, then closed (a
// failed close removes the new name: the file's state is unknown). When the object exists
// there is nothing to remove.
func (c *Committer) placeUnnamed(m *member) (existed, createdDir bool, err error) {
	existed, createdDir, err = c.place(m.tmp, true, m.final, false)
	cerr := m.tmp.Close()
	if err == nil && !existed && cerr != nil {
		_ = os.Remove(m.final)
		err = cerr
	}
	return existed, createdDir, err
}

// failGroup fails every commit of the group with err (keeping an earlier error of a commit's
// own), closing the files still open and removing the objects the group renamed into place.
func (c *Committer) failGroup(group []*member, err error) {
	for _, m := range group {
		if m.renamed {
			_ = os.Remove(m.final)
			m.renamed = false
		} else if m.err == nil && !m.existed {
			_ = m.tmp.Close() // the file is still open unless step 3 reached it
		}
		if m.err == nil {
			m.err = fmt.Errorf("commit %q: %w", m.key, err)
		}
	}
}
