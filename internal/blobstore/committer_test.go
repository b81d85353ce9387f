package blobstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/clock"
)

// newGroupCommitter returns a SyncGroup Committer of a fresh bucket folder (with its TempDir).
func newGroupCommitter(t *testing.T) (*Committer, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	return NewCommitter(dir, SyncGroup), dir
}

// tempWith returns an open temporary file of the bucket holding body.
func tempWith(t *testing.T, dir, body string) *os.File {
	t.Helper()
	f, err := os.CreateTemp(TempDir(dir), "*"+TempSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	return f
}

// keyOf is a content key for test number i.
func keyOf(i int) string { return ContentKey(fmt.Sprintf("%064x", i)) }

// result is what one Commit returned.
type result struct {
	existed bool
	err     error
}

// commitAsync runs c.Commit in a goroutine; the channel receives its result.
func commitAsync(c *Committer, f *os.File, key string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		ex, err := c.Commit(f, key)
		ch <- result{ex, err}
	}()
	return ch
}

// stagedGroup makes the next group deterministic: the first commit (first) leads a group of its
// own whose first syncfs blocks until the others (rest) are all queued; then the second group is
// exactly rest (when rest fits in a group). syncFS is the real syncfs, or fail's error when fail
// returns one for the call number (1-based).
type stagedGroup struct {
	c       *Committer
	mu      sync.Mutex
	calls   int
	entered chan struct{} // closed when the first syncfs starts
	release chan struct{} // closed to let it finish
	fail    func(call int) error
	sizes   []int
}

func stage(c *Committer, waitFor int, fail func(call int) error) *stagedGroup {
	s := &stagedGroup{c: c, entered: make(chan struct{}), release: make(chan struct{}), fail: fail}
	all := make(chan struct{})
	c.queued = func(n int) {
		if n == waitFor {
			close(all)
		}
	}
	c.ranGroup = func(n int) {
		s.mu.Lock()
		s.sizes = append(s.sizes, n)
		s.mu.Unlock()
	}
	real := c.syncFS
	c.syncFS = func(f *os.File) error {
		s.mu.Lock()
		s.calls++
		call := s.calls
		s.mu.Unlock()
		if call == 1 {
			close(s.entered)
			<-all
			<-s.release
		}
		if s.fail != nil {
			if err := s.fail(call); err != nil {
				return err
			}
		}
		return real(f)
	}
	return s
}

func (s *stagedGroup) groupSizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sizes)
}

// runStaged commits bodies[0] alone, then bodies[1:] queued behind it, and returns the results
// in order.
func runStaged(t *testing.T, c *Committer, dir string, s *stagedGroup, keys []string) []result {
	t.Helper()
	first := commitAsync(c, tempWith(t, dir, "%PDF-first"), keys[0])
	<-s.entered
	var chans []<-chan result
	for i, k := range keys[1:] {
		chans = append(chans, commitAsync(c, tempWith(t, dir, fmt.Sprintf("%%PDF-%d", i+1)), k))
	}
	close(s.release)
	res := []result{<-first}
	for _, ch := range chans {
		res = append(res, <-ch)
	}
	return res
}

func TestGroupCommitConcurrentDurableOrder(t *testing.T) {
	c, dir := newGroupCommitter(t)
	// Each syncfs records, when it starts, which objects and temporary files exist: a commit
	// is durable when a syncfs that started while its temporary file held the data (step 2)
	// completed, and a later one that started after its rename (step 4) completed before
	// Commit returned.
	type call struct {
		finals, after map[string]bool // objects when it started, when it ended
		done          bool
	}
	var mu sync.Mutex
	var calls []*call
	real := c.syncFS
	c.syncFS = func(f *os.File) error {
		objects := func() map[string]bool {
			m := map[string]bool{}
			ents, _ := filepath.Glob(filepath.Join(dir, "sha256", "*", "*"))
			for _, e := range ents {
				m[e] = true
			}
			return m
		}
		cl := &call{finals: objects()}
		mu.Lock()
		calls = append(calls, cl)
		mu.Unlock()
		err := real(f)
		after := objects()
		mu.Lock()
		cl.done, cl.after = true, after
		mu.Unlock()
		return err
	}
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		go func() {
			// Pairs of writers commit identical content: stored once.
			key := keyOf(i / 2)
			f := tempWith(t, dir, fmt.Sprintf("%%PDF-%d", i/2))
			mu.Lock()
			since := len(calls) // the syncfs calls that began after the data was written
			mu.Unlock()
			existed, err := c.Commit(f, key)
			if err == nil {
				final := filepath.Join(dir, filepath.FromSlash(key))
				mu.Lock()
				data := slices.ContainsFunc(calls[since:], func(cl *call) bool { return cl.done && !cl.after[final] })
				name := slices.ContainsFunc(calls, func(cl *call) bool { return cl.done && cl.finals[final] })
				mu.Unlock()
				if !data && !existed {
					err = fmt.Errorf("commit %d renamed before a syncfs of its data", i)
				}
				if !name {
					err = fmt.Errorf("commit %d returned before a syncfs that began after its rename", i)
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i := range n / 2 {
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(keyOf(i))))
		if err != nil || string(got) != fmt.Sprintf("%%PDF-%d", i) {
			t.Fatalf("key %d: %q %v", i, got, err)
		}
	}
	if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	// Every syncfs call is one of a group's two: at most two per commit.
	if len(calls) > 2*n || len(calls)%2 != 0 {
		t.Fatalf("%d syncfs calls for %d commits", len(calls), n)
	}
}

func TestGroupCommitEachGetsItsOwnResult(t *testing.T) {
	c, dir := newGroupCommitter(t)
	// The object of keys[1] exists; keys[3]'s folder is a file, so its rename fails.
	keys := []string{keyOf(0), keyOf(1), keyOf(2), "sha256/zz/x.pdf", keyOf(4)}
	existing := filepath.Join(dir, filepath.FromSlash(keys[1]))
	if err := os.MkdirAll(filepath.Dir(existing), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(existing, []byte("%PDF-old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sha256", "zz"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := stage(c, len(keys)-1, nil)
	res := runStaged(t, c, dir, s, keys)
	if got := s.groupSizes(); !slices.Equal(got, []int{1, 4}) {
		t.Fatalf("group sizes %v, want [1 4]", got)
	}
	for i, r := range res {
		switch i {
		case 1:
			if r.err != nil || !r.existed {
				t.Errorf("existing object: existed %v, err %v; want existed", r.existed, r.err)
			}
		case 3:
			if r.err == nil || !errors.Is(r.err, syscall.ENOTDIR) {
				t.Errorf("rename into a file: err %v, want ENOTDIR", r.err)
			}
		default:
			if r.err != nil || r.existed {
				t.Errorf("commit %d: existed %v, err %v", i, r.existed, r.err)
			}
			if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(keys[i]))); err != nil {
				t.Errorf("commit %d: %v", i, err)
			}
		}
	}
	if got, _ := os.ReadFile(existing); string(got) != "%PDF-old" {
		t.Fatalf("existing object rewritten: %q", got)
	}
	// Only the failed rename's temporary file is left (for its caller to remove).
	if left, _ := os.ReadDir(TempDir(dir)); len(left) != 1 {
		t.Fatalf("temp files left: %v, want the failed commit's", left)
	}
}

func TestGroupCommitSyncFSFailureFailsTheGroup(t *testing.T) {
	injected := errors.New("injected EIO")
	for _, tc := range []struct {
		name string
		call int
	}{{"before the renames", 3}, {"after the renames", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			c, dir := newGroupCommitter(t)
			keys := []string{keyOf(0), keyOf(1), keyOf(2), keyOf(3)}
			s := stage(c, len(keys)-1, func(call int) error {
				if call == tc.call {
					return injected
				}
				return nil
			})
			res := runStaged(t, c, dir, s, keys)
			if got := s.groupSizes(); !slices.Equal(got, []int{1, 3}) {
				t.Fatalf("group sizes %v, want [1 3]", got)
			}
			if res[0].err != nil {
				t.Fatalf("first group: %v", res[0].err)
			}
			for i, r := range res[1:] {
				if !errors.Is(r.err, injected) {
					t.Errorf("commit %d: err %v, want the syncfs error", i+1, r.err)
				}
				// Not durable, so not there: a retry writes it again.
				if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(keys[i+1]))); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("commit %d: object left behind after a failed syncfs: %v", i+1, err)
				}
			}
			// The next commit works.
			if _, err := c.Commit(tempWith(t, dir, "%PDF-1"), keys[1]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestGroupCommitBoundedGroups(t *testing.T) {
	c, dir := newGroupCommitter(t)
	c.maxGroup = 4
	keys := make([]string, 11)
	for i := range keys {
		keys[i] = keyOf(i)
	}
	s := stage(c, len(keys)-1, nil)
	for i, r := range runStaged(t, c, dir, s, keys) {
		if r.err != nil {
			t.Fatalf("commit %d: %v", i, r.err)
		}
	}
	if got := s.groupSizes(); !slices.Equal(got, []int{1, 4, 4, 2}) {
		t.Fatalf("group sizes %v, want [1 4 4 2]", got)
	}
}

func TestGroupCommitHandOverUnderContention(t *testing.T) {
	c, dir := newGroupCommitter(t)
	c.maxGroup = 3
	var mu sync.Mutex
	total, groups := 0, 0
	c.ranGroup = func(n int) {
		mu.Lock()
		total += n
		groups++
		mu.Unlock()
		if n < 1 || n > 3 {
			t.Errorf("group of %d", n)
		}
	}
	const writers, each = 24, 8
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for j := range each {
				i := w*each + j
				if _, err := c.Commit(tempWith(t, dir, fmt.Sprintf("%%PDF-%d", i)), keyOf(i)); err != nil {
					t.Errorf("commit %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	if total != writers*each {
		t.Fatalf("groups took %d commits, want %d", total, writers*each)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) != 0 || c.running {
		t.Fatalf("after the last commit: %d queued, running %v", len(c.queue), c.running)
	}
	for i := range writers * each {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(keyOf(i)))); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d commits in %d groups", total, groups)
}

func TestGroupCommitFallsBackWithoutSyncFS(t *testing.T) {
	c, dir := newGroupCommitter(t)
	calls := 0
	c.syncFS = func(*os.File) error { calls++; return fmt.Errorf("syncfs: %w", syscall.ENOSYS) }
	for i := range 2 {
		if ex, err := c.Commit(tempWith(t, dir, "%PDF-x"), keyOf(i)); err != nil || ex {
			t.Fatalf("commit %d: existed %v, err %v", i, ex, err)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(keyOf(i)))); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Fatalf("syncfs tried %d times, want once", calls)
	}
}

// A SyncGroup commit of LargeCommit bytes or more (CommitSized) is made durable on its own: no
// syncfs(2), which would write every other dirty page of the file system too. Smaller or
// unsized commits go in groups (two syncfs calls each here, one at a time).
func TestGroupCommitLargeFilesOnTheirOwn(t *testing.T) {
	c, dir := newGroupCommitter(t)
	var calls atomic.Int32
	c.syncFS = func(f *os.File) error { calls.Add(1); return syncFS(f) }
	for i, size := range []int64{LargeCommit, LargeCommit + 1, -1, LargeCommit - 1} {
		before := calls.Load()
		if ex, err := c.CommitSized(tempWith(t, dir, "%PDF-x"), keyOf(i), size); err != nil || ex {
			t.Fatalf("commit %d: existed %v, err %v", i, ex, err)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(keyOf(i)))); err != nil {
			t.Fatal(err)
		}
		want := int32(2)
		if size >= LargeCommit {
			want = 0
		}
		if got := calls.Load() - before; got != want {
			t.Errorf("commit of size %d: %d syncfs calls, want %d", size, got, want)
		}
	}
}

func TestSyncModeText(t *testing.T) {
	for _, m := range []SyncMode{SyncPerFile, SyncGroup} {
		b, err := m.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got SyncMode
		if err := got.UnmarshalText(b); err != nil || got != m {
			t.Fatalf("%s: round trip gave %v, %v", b, got, err)
		}
	}
	var m SyncMode
	if err := m.UnmarshalText([]byte("fsync")); err == nil {
		t.Fatal("unknown mode accepted")
	}
	if _, err := SyncMode(0).MarshalText(); err == nil {
		t.Fatal("zero mode marshalled")
	}
}

// TestPerFileCommitOfAnExistingObjectSyncsItsName checks that a per-file commit that finds its
// object already there syncs the object's folder before reporting it: a concurrent commit may
// have renamed it into place and not synced the folder yet, and a crash would lose the name.
func TestPerFileCommitOfAnExistingObjectSyncsItsName(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	c := NewCommitter(dir, SyncPerFile)
	var synced []string
	c.syncDir = func(p string) error {
		synced = append(synced, p)
		return syncPath(p)
	}
	key := keyOf(0)
	folder := filepath.Dir(filepath.Join(dir, filepath.FromSlash(key)))
	if ex, err := c.Commit(tempWith(t, dir, "%PDF-x"), key); err != nil || ex {
		t.Fatalf("first commit: existed %v, err %v", ex, err)
	}
	synced = nil
	if ex, err := c.Commit(tempWith(t, dir, "%PDF-x"), key); err != nil || !ex {
		t.Fatalf("duplicate commit: existed %v, err %v", ex, err)
	}
	if !slices.Contains(synced, folder) {
		t.Fatalf("duplicate commit synced %v, want the object's folder %s", synced, folder)
	}
	// A failed sync of the name fails the commit.
	injected := errors.New("injected EIO")
	c.syncDir = func(string) error { return injected }
	if _, err := c.Commit(tempWith(t, dir, "%PDF-x"), key); !errors.Is(err, injected) {
		t.Fatalf("duplicate commit with a failing folder sync: %v", err)
	}
	if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// TestGroupCommitLeaderPanicHandsOver checks that a leader whose group panics (recovered by its
// caller, as a gRPC handler's recovery does) still wakes its group's other commits with an
// error and gives up the lead: before, every later commit waited for good.
func TestGroupCommitLeaderPanicHandsOver(t *testing.T) {
	c, dir := newGroupCommitter(t)
	queued := make(chan int, 8)
	c.queued = func(n int) { queued <- n }
	entered, release := make(chan struct{}), make(chan struct{})
	real, calls := c.syncFS, 0 // calls: only leaders call syncFS, one at a time
	c.syncFS = func(f *os.File) error {
		if calls++; calls == 1 {
			close(entered)
			<-release
		}
		return real(f)
	}
	c.ranGroup = func(n int) {
		if n == 2 {
			panic("injected panic")
		}
	}
	first := commitAsync(c, tempWith(t, dir, "%PDF-0"), keyOf(0))
	<-queued
	<-entered
	// The second commit leads the next group (of two), which panics.
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_, _ = c.Commit(tempWith(t, dir, "%PDF-1"), keyOf(1))
	}()
	<-queued
	third := commitAsync(c, tempWith(t, dir, "%PDF-2"), keyOf(2))
	<-queued
	close(release)
	if r := <-first; r.err != nil {
		t.Fatalf("first group: %v", r.err)
	}
	if p := <-panicked; p != "injected panic" {
		t.Fatalf("leader recovered %v, want the injected panic", p)
	}
	c.mu.Lock()
	running, left := c.running, len(c.queue)
	c.mu.Unlock()
	if running || left != 0 {
		t.Fatalf("after the panicked group: running %v, %d queued; the lead was not given up", running, left)
	}
	if r := <-third; r.err == nil {
		t.Fatal("a commit of the panicked group succeeded")
	}
	if _, err := c.Commit(tempWith(t, dir, "%PDF-3"), keyOf(3)); err != nil {
		t.Fatalf("commit after the panicked group: %v", err)
	}
}

// TestGroupCommitSyncsTheFoldersItCreates checks that a group makes the key folders it creates
// durable with its second syncfs (it does not fsync them one by one), even when no commit of
// the group is renamed into place: a later commit finds the folder there and relies on it.
func TestGroupCommitSyncsTheFoldersItCreates(t *testing.T) {
	c, dir := newGroupCommitter(t)
	key := keyOf(7)
	folder := filepath.Dir(filepath.Join(dir, filepath.FromSlash(key)))
	var syncedAfter []bool // per syncfs call: the folder existed when it started
	real := c.syncFS
	c.syncFS = func(f *os.File) error {
		_, err := os.Stat(folder)
		syncedAfter = append(syncedAfter, err == nil)
		return real(f)
	}
	c.syncDir = func(p string) error { t.Errorf("group commit fsynced folder %s", p); return syncPath(p) }
	// The temporary file is gone (another fetcher removed it): the rename fails after the
	// missing folder was created.
	f := tempWith(t, dir, "%PDF-x")
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Commit(f, key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("commit of a removed file: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(folder); err != nil {
		t.Fatalf("folder not created: %v", err)
	}
	if !slices.Contains(syncedAfter, true) {
		t.Fatalf("no syncfs began after the folder was created (syncfs calls: %v)", syncedAfter)
	}
	// A commit into a new folder of a new parent.
	if err := os.RemoveAll(filepath.Join(dir, "sha256")); err != nil {
		t.Fatal(err)
	}
	syncedAfter = nil
	if ex, err := c.Commit(tempWith(t, dir, "%PDF-x"), key); err != nil || ex {
		t.Fatalf("commit into a new folder: existed %v, err %v", ex, err)
	}
	if len(syncedAfter) != 2 || !syncedAfter[1] {
		t.Fatalf("syncfs calls %v, want the second to begin after the folder was created", syncedAfter)
	}
}

// TestCommitWithAndWithoutRenameNoReplace checks both ways of placing an object, in both modes:
// renameat2(2) RENAME_NOREPLACE, and where it is unsupported, os.Stat then rename.
func TestCommitWithAndWithoutRenameNoReplace(t *testing.T) {
	for _, mode := range []SyncMode{SyncGroup, SyncPerFile} {
		for _, noReplace := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/renameat2=%v", mode, noReplace), func(t *testing.T) {
				dir := t.TempDir()
				if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
					t.Fatal(err)
				}
				// An unclean bucket folder name: objects are still placed at Join(dir, key).
				c := NewCommitter(dir+"/./", mode)
				c.noRenameat2.Store(!noReplace)
				// new, duplicate, new in another folder
				keys := []string{ContentKey(strings.Repeat("a", 64)), ContentKey(strings.Repeat("a", 64)), ContentKey(strings.Repeat("b", 64))}
				for i, want := range []bool{false, true, false} {
					key := keys[i]
					if ex, err := c.Commit(tempWith(t, dir, fmt.Sprintf("%%PDF-%d", i/2)), key); err != nil || ex != want {
						t.Fatalf("commit %d: existed %v, err %v; want existed %v", i, ex, err, want)
					}
					got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
					if err != nil || string(got) != fmt.Sprintf("%%PDF-%d", i/2) {
						t.Fatalf("commit %d: object %q, %v", i, got, err)
					}
				}
				// A temporary file that is gone (another fetcher removed it) of content already
				// stored: the object exists, so the commit succeeds.
				f := tempWith(t, dir, "%PDF-0")
				if err := os.Remove(f.Name()); err != nil {
					t.Fatal(err)
				}
				if ex, err := c.Commit(f, keys[0]); err != nil || !ex {
					t.Fatalf("commit of a removed file of a stored object: existed %v, err %v", ex, err)
				}
				if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
					t.Fatalf("temp files left: %v", left)
				}
			})
		}
	}
}

// TestCommitFallsBackWithoutRenameNoReplace checks that a commit where renameat2(2) reports
// RENAME_NOREPLACE unsupported (EINVAL, ENOSYS: errors.ErrUnsupported) places the object with
// os.Stat and rename, and that later commits do not try renameat2 again.
func TestCommitFallsBackWithoutRenameNoReplace(t *testing.T) {
	for _, mode := range []SyncMode{SyncGroup, SyncPerFile} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
				t.Fatal(err)
			}
			c := NewCommitter(dir, mode)
			calls := 0
			c.renameat2 = func(oldpath, newpath string) error {
				calls++
				return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: errors.ErrUnsupported}
			}
			keys := []string{ContentKey(strings.Repeat("c", 64)), ContentKey(strings.Repeat("c", 64)), ContentKey(strings.Repeat("d", 64))}
			for i, want := range []bool{false, true, false} { // new, duplicate, new in a new folder
				key := keys[i]
				if ex, err := c.Commit(tempWith(t, dir, fmt.Sprintf("%%PDF-%d", i/2)), key); err != nil || ex != want {
					t.Fatalf("commit %d: existed %v, err %v; want existed %v", i, ex, err, want)
				}
				if got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key))); err != nil || string(got) != fmt.Sprintf("%%PDF-%d", i/2) {
					t.Fatalf("commit %d: object %q, %v", i, got, err)
				}
			}
			if calls != 1 || !c.noRenameat2.Load() {
				t.Fatalf("renameat2 called %d times (want 1), unsupported remembered: %v", calls, c.noRenameat2.Load())
			}
			if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

// TestGroupCommitWindow: with a gathering window a group starts no sooner than the window after
// the previous group started (the commits queued meanwhile join it), at once when StartAt
// commits are queued, and at once when the window has passed.
func TestGroupCommitWindow(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Unix(1e9, 0))
	c := NewCommitterWith(dir, SyncGroup, CommitterOptions{Window: 10 * time.Millisecond, StartAt: 3, Clock: clk})
	queued := make(chan int, 16)
	c.queued = func(n int) { queued <- n }
	var mu sync.Mutex
	var sizes []int
	c.ranGroup = func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	commit := func(i int) <-chan result {
		return commitAsync(c, tempWith(t, dir, fmt.Sprintf("%%PDF-%d", i)), keyOf(i))
	}
	wantOK := func(i int, ch <-chan result) {
		t.Helper()
		if r := <-ch; r.err != nil || r.existed {
			t.Fatalf("commit %d: %+v", i, r)
		}
	}

	// The first group starts at once: no group started before.
	wantOK(0, commit(0))
	<-queued
	// Within the window: the next leader waits for it, and a commit queued meanwhile joins.
	r1 := commit(1)
	<-queued
	if err := clk.WaitForWaiters(ctx, 1); err != nil {
		t.Fatalf("no window timer armed: %v", err)
	}
	r2 := commit(2)
	<-queued
	clk.Advance(10 * time.Millisecond)
	wantOK(1, r1)
	wantOK(2, r2)
	// Within the next window again, StartAt queued commits start the group at once.
	r3 := commit(3)
	<-queued
	if err := clk.WaitForWaiters(ctx, 1); err != nil {
		t.Fatalf("no window timer armed: %v", err)
	}
	r4, r5 := commit(4), commit(5)
	<-queued
	<-queued
	wantOK(3, r3)
	wantOK(4, r4)
	wantOK(5, r5)
	// Once the window has passed, a commit starts its group at once.
	clk.Advance(10 * time.Millisecond)
	wantOK(6, commit(6))
	<-queued

	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(sizes, []int{1, 2, 3, 1}) {
		t.Fatalf("group sizes %v, want [1 2 3 1]", sizes)
	}
	if n := clk.Waiters(); n != 0 {
		t.Fatalf("%d timers left armed", n)
	}
	for i := range 7 {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(keyOf(i)))); err != nil {
			t.Fatal(err)
		}
	}
}

// A large commit in SyncGroup mode is durable before it returns as a per-file commit is: its
// key's folder is fsynced after the rename (its data by fdatasync before it), and a failed
// folder fsync fails it (the object is then not reported durable). Large commits of one key and
// small ones of others, all at once, each succeed once, a duplicate large one as existing.
func TestGroupCommitLargeDurable(t *testing.T) {
	c, dir := newGroupCommitter(t)
	var mu sync.Mutex
	synced := map[string]int{}
	var failDir atomic.Bool
	c.syncDir = func(p string) error {
		mu.Lock()
		synced[p]++
		mu.Unlock()
		if failDir.Load() {
			return errors.New("injected EIO")
		}
		return syncPath(p)
	}
	var calls atomic.Int32
	c.syncFS = func(f *os.File) error { calls.Add(1); return syncFS(f) }

	folder := func(key string) string {
		return filepath.Dir(filepath.Join(dir, filepath.FromSlash(key)))
	}
	if ex, err := c.CommitSized(tempWith(t, dir, "%PDF-large"), keyOf(1), LargeCommit); err != nil || ex {
		t.Fatalf("large commit: existed %v, err %v", ex, err)
	}
	if synced[folder(keyOf(1))] == 0 || calls.Load() != 0 {
		t.Fatalf("large commit: folder synced %d times, %d syncfs calls; want a folder fsync and no syncfs", synced[folder(keyOf(1))], calls.Load())
	}

	failDir.Store(true)
	if _, err := c.CommitSized(tempWith(t, dir, "%PDF-large 2"), keyOf(2), LargeCommit+1); err == nil {
		t.Fatal("a large commit whose folder fsync failed reported durable")
	}
	failDir.Store(false)

	var wg sync.WaitGroup
	var existed atomic.Int32
	for i := range 8 {
		wg.Go(func() {
			key, size := keyOf(100+i), int64(LargeCommit-1)
			if i%2 == 0 {
				key, size = keyOf(3), LargeCommit // four commits of one large object
			}
			ex, err := c.CommitSized(tempWith(t, dir, "%PDF-mixed"), key, size)
			if err != nil {
				t.Errorf("commit %d: %v", i, err)
			}
			if ex {
				existed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := existed.Load(); n != 3 {
		t.Errorf("%d of the 4 commits of one large object existed, want 3", n)
	}
	for i := range 8 {
		key := keyOf(100 + i)
		if i%2 == 0 {
			key = keyOf(3)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key))); err != nil {
			t.Error(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if synced[folder(keyOf(3))] < 4 {
		t.Errorf("the large object's folder synced %d times, want once per commit (4)", synced[folder(keyOf(3))])
	}
	if entries, _ := os.ReadDir(TempDir(dir)); len(entries) > 1 { // the failed commit's file may stay
		t.Errorf("%d temporary files left", len(entries))
	}
}

// unnamedWith returns an open unnamed file (O_TMPFILE) of the bucket's TempDir holding body,
// skipping the test where the file system has none.
func unnamedWith(t *testing.T, dir, body string) *os.File {
	t.Helper()
	f, err := atomicfile.CreateUnnamed(TempDir(dir))
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no unnamed files here:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	return f
}

// CommitUnnamed links an unnamed file into place in every way of committing (group, per file,
// large in a group, a group without syncfs): the key's missing folder is created, the object
// holds the body, a second commit of the key finds it (existed) and leaves it alone, nothing is
// left in TempDir and the files are closed. In a group the first syncfs runs before the name
// exists and the second after it.
func TestCommitUnnamed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     SyncMode
		size     int64
		noSyncFS bool
	}{
		{"group", SyncGroup, 100, false},
		{"per-file", SyncPerFile, 100, false},
		{"group-large", SyncGroup, LargeCommit, false},
		{"group-no-syncfs", SyncGroup, 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
				t.Fatal(err)
			}
			c := NewCommitter(dir, tc.mode)
			key := keyOf(7)
			final := filepath.Join(dir, filepath.FromSlash(key))
			var seen []bool // whether the object existed when each syncfs started
			c.syncFS = func(f *os.File) error {
				if tc.noSyncFS {
					return &os.PathError{Op: "syncfs", Path: f.Name(), Err: errors.ErrUnsupported}
				}
				_, err := os.Stat(final)
				seen = append(seen, err == nil)
				return syncFS(f)
			}
			var synced []string
			c.syncDir = func(p string) error { synced = append(synced, p); return syncPath(p) }

			f := unnamedWith(t, dir, "%PDF-unnamed")
			if ex, err := c.CommitUnnamed(f, key, tc.size); err != nil || ex {
				t.Fatalf("commit: existed %v, err %v", ex, err)
			}
			if got, err := os.ReadFile(final); err != nil || string(got) != "%PDF-unnamed" {
				t.Fatalf("object = %q, %v", got, err)
			}
			if err := f.Close(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("the committed file is still open (close: %v)", err)
			}
			wantGroup := tc.mode == SyncGroup && tc.size < LargeCommit && !tc.noSyncFS
			if wantGroup && !slices.Equal(seen, []bool{false, true}) {
				t.Fatalf("syncfs saw the object %v, want [false true]: data before the name, the name before the result", seen)
			}
			if !wantGroup && !slices.Contains(synced, filepath.Dir(final)) {
				t.Fatalf("per-file commit synced %v, want the object's folder", synced)
			}

			g := unnamedWith(t, dir, "%PDF-unnamed")
			if ex, err := c.CommitUnnamed(g, key, tc.size); err != nil || !ex {
				t.Fatalf("second commit: existed %v, err %v", ex, err)
			}
			if err := g.Close(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("the duplicate's file is still open (close: %v)", err)
			}
			if st, err := os.Stat(final); err != nil || st.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Fatalf("object after the duplicate: %v %v", st, err)
			}
			if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

// Concurrent unnamed and named commits of the same keys in groups: each key is stored once with
// its body, every other commit of it existed, nothing is left in TempDir.
func TestGroupCommitUnnamedAndNamedConcurrently(t *testing.T) {
	c, dir := newGroupCommitter(t)
	const n = 24
	var existed atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf("%%PDF-%d", i/3)
			var ex bool
			var err error
			if i%3 == 2 {
				ex, err = c.Commit(tempWith(t, dir, body), keyOf(i/3))
			} else {
				ex, err = c.CommitUnnamed(unnamedWith(t, dir, body), keyOf(i/3), int64(len(body)))
			}
			if err != nil {
				t.Errorf("commit %d: %v", i, err)
			}
			if ex {
				existed.Add(1)
			}
		})
	}
	wg.Wait()
	if got := existed.Load(); got != n-n/3 {
		t.Errorf("%d commits existed, want %d", got, n-n/3)
	}
	for i := range n / 3 {
		if got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(keyOf(i)))); err != nil || string(got) != fmt.Sprintf("%%PDF-%d", i) {
			t.Errorf("key %d: %q %v", i, got, err)
		}
	}
	if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// A per-file commit that finds its object already there makes the object's inode durable
// before it reports it, not only its folder: a concurrent commit of an unnamed file may have
// linked the object and not yet fsynced its inode, whose link count on disk is still 0 (a power
// loss would leave a name pointing at a freed inode). Both ways of finding it are covered: the
// first check (the object was there before the commit began) and the rename's EEXIST.
func TestPerFileCommitOfALinkedObjectSyncsItsInode(t *testing.T) {
	for _, found := range []string{"stat", "rename"} {
		t.Run(found, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
				t.Fatal(err)
			}
			c := NewCommitter(dir, SyncPerFile)
			key := keyOf(3)
			final := filepath.Join(dir, filepath.FromSlash(key))
			const body = "%PDF-linked"
			unnamed := unnamedWith(t, dir, body)

			linked, release := make(chan struct{}), make(chan struct{})
			var mu sync.Mutex
			var synced []string
			c.syncFile = func(f *os.File) error {
				if f == unnamed {
					close(linked) // the object is linked; its inode is not synced yet
					<-release
				} else {
					mu.Lock()
					synced = append(synced, f.Name())
					mu.Unlock()
				}
				return f.Sync()
			}
			a := make(chan result, 1)
			startA := func() {
				go func() {
					ex, err := c.CommitUnnamed(unnamed, key, int64(len(body)))
					a <- result{ex, err}
				}()
				<-linked
			}
			if found == "stat" {
				startA()
			} else {
				c.renameat2 = func(oldpath, newpath string) error {
					startA() // linked between the duplicate's first check and its rename
					return renameNoReplace(oldpath, newpath)
				}
			}
			ex, err := c.Commit(tempWith(t, dir, body), key)
			mu.Lock()
			got := slices.Clone(synced)
			mu.Unlock()
			close(release)
			if r := <-a; r.err != nil || r.existed {
				t.Fatalf("unnamed commit: existed %v, err %v", r.existed, r.err)
			}
			if err != nil || !ex {
				t.Fatalf("duplicate commit: existed %v, err %v", ex, err)
			}
			if !slices.Contains(got, final) {
				t.Fatalf("the duplicate reported the object (linked, inode not synced) having fsynced %v, want %s", got, final)
			}
			if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}
