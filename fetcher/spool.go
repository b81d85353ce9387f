package fetcher

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/strsum"
)

// spool manages the local files downloads are written to before they are committed. A file
// kept for resuming is named after the fetcher id and the URL (never the paper id), with a
// small JSON sidecar holding the validator (ETag or Last-Modified) and the total size, so a
// retry of the same URL can continue with a Range request. Names end in
// blobstore.TempSuffix so that, inside a file:// bucket, List never shows them.
//
// File names (H(x) is a hex prefix of the SHA-256 of x):
//
//	<H(fetcher id)>-<H(url)>.part<TempSuffix>        resumable body of url
//	<H(fetcher id)>-<H(url)>.meta<TempSuffix>        its sidecar
//	<H(fetcher id)>-<H(url)>-<random>.tmp<TempSuffix> non-resumable body of url
//
// The URL part is the same for every fetcher, so whoever finishes a URL (stored, or failed
// permanently) removes every fetcher's spool files for it (removeURL), and sweep removes files
// nobody wrote to for a while (those of killed fetchers, partials never resumed).
//
// Where the file system has unnamed files (O_TMPFILE; atomicfile.CreateUnnamed), a fresh file
// is created without a name: a body that is never kept (every small download, and every
// non-resumable one) never has a name in the spool folder and is linked straight into the
// bucket by its commit (blobstore.Committer.CommitUnnamed), which saves the create's directory
// entry and the rename's removal of it, and a crash leaves nothing of it. A resumable file gets
// its name (linked under it) only when a name is needed: when it reaches metaAfter bytes (its
// sidecar is written then, so that a crash leaves a resumable partial as before) or when it is
// kept for resuming (abandon).
type spool struct {
	dir    string
	prefix string // hash of the fetcher id
	clk    clock.Clock
	// metaAfter: a sidecar is written once a resumable file holds this many bytes (a smaller
	// partial is not kept for resuming, so writing and removing a sidecar for every small
	// download would only cost two metadata operations each).
	metaAfter int64

	mu   sync.Mutex
	busy map[string]bool // keys of the keyed spool files in use
	// metas: keys of this fetcher whose sidecar may exist, found at start and kept up to date,
	// so that opening a keyed file reads a sidecar only when there may be one. Only this
	// fetcher writes sidecars under its prefix (another may remove them: then the entry is
	// merely stale, and reading the sidecar fails as it would have).
	metas map[string]bool
	inUse map[string]bool // paths of the spool files (and sidecars) of running downloads

	// noUnnamed: fresh files are created under their names (O_CREAT), as where the file
	// system has no unnamed files or they cannot be linked (found once: newSpool's probe, or
	// an unsupported create).
	noUnnamed atomic.Bool
	// createUnnamed is atomicfile.CreateUnnamed (a field so that tests can make it fail).
	createUnnamed func(dir string) (*os.File, error)
	// linker names the unnamed files.
	linker atomicfile.Linker
}

func newSpool(dir, fetcherID string, clk clock.Clock) (*spool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("spool folder: %w", err)
	}
	h := sha256.Sum256([]byte(fetcherID))
	s := &spool{dir: filepath.Clean(dir), prefix: hex.EncodeToString(h[:4]), clk: clk, busy: map[string]bool{}, inUse: map[string]bool{}, metas: map[string]bool{},
		createUnnamed: atomicfile.CreateUnnamed}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool folder: %w", err)
	}
	s.noUnnamed.Store(!s.probeUnnamed())
	for _, e := range entries {
		if k, ok := strings.CutSuffix(e.Name(), metaSuffix); ok && strings.HasPrefix(k, s.prefix+"-") {
			s.metas[k] = true
		}
	}
	return s, nil
}

// probeUnnamed reports whether an unnamed file can be made in the spool folder and linked
// (O_TMPFILE and linkat(2) by descriptor or through /proc/self/fd): it makes one, links it
// under a temporary name and removes that.
func (s *spool) probeUnnamed() bool {
	f, err := s.createUnnamed(s.dir)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	p := s.pathOf(s.prefix + "-probe-" + hex.EncodeToString(rnd[:]) + tmpSuffix)
	if err := s.linker.Link(f, p); err != nil {
		return false
	}
	return os.Remove(p) == nil
}

// openUnnamed returns a new unnamed file in the spool folder, or nil where there are none (the
// file is then created under its name). An unsupported create is remembered.
func (s *spool) openUnnamed() *os.File {
	if s.noUnnamed.Load() {
		return nil
	}
	f, err := s.createUnnamed(s.dir)
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			s.noUnnamed.Store(true)
		}
		return nil
	}
	return f
}

// pathOf returns the path of the spool file name: filepath.Join(s.dir, name) without its
// Clean pass over the whole path (s.dir is clean, name a plain file name), once per download.
// Every spool path is made here, so that equal names give equal strings (s.inUse).
func (s *spool) pathOf(name string) string {
	if strings.HasSuffix(s.dir, string(filepath.Separator)) {
		return s.dir + name
	}
	return s.dir + string(filepath.Separator) + name
}

// pathOf2 is pathOf(name + suffix), in one allocation.
func (s *spool) pathOf2(name, suffix string) string {
	if strings.HasSuffix(s.dir, string(filepath.Separator)) {
		return s.dir + name + suffix
	}
	return s.dir + string(filepath.Separator) + name + suffix
}

// urlHash is the part of a spool file name derived from the URL, shared by all fetchers.
func urlHash(url string) string {
	var hx [32]byte
	urlHashTo(&hx, url)
	return string(hx[:])
}

// urlHashTo writes urlHash(url) to hx, without allocating (strsum).
func urlHashTo(hx *[32]byte, url string) {
	h := strsum.SHA256(url)
	hex.Encode(hx[:], h[:16])
}

// Suffixes of spool file names (see spool).
const (
	partSuffix = ".part" + blobstore.TempSuffix
	metaSuffix = ".meta" + blobstore.TempSuffix
	tmpSuffix  = ".tmp" + blobstore.TempSuffix
)

// spoolMeta is the sidecar of a resumable spool file.
type spoolMeta struct {
	URL       string `json:"url"`
	Validator string `json:"validator"`
	Total     int64  `json:"total"`
}

// spoolFile is one download's local file.
type spoolFile struct {
	s        *spool
	key      string // non-empty for keyed (resumable) files
	path     string
	metaPath string
	f        *os.File
	url      string
	meta     spoolMeta // validator/total of the bytes on disk
	size     int64     // bytes in the file
	synced   int64     // bytes handed to the kernel for writeback
	released bool
	// unnamed: the file has no name (O_TMPFILE): nothing is under path (a keyed file's name
	// to be, "" for a fresh non-resumable one) until name links it there.
	unnamed bool
	// metaExists: the sidecar may exist on disk.
	metaExists bool
	// metaPending: meta holds a validator whose sidecar is not written yet (see metaAfter).
	metaPending bool
	// committed: the file was renamed (or linked) into the bucket; nothing is left under path.
	committed bool
}

// open returns the spool file for url. With resume, the file kept by an earlier attempt for the
// same URL is reopened (its bytes are offered for a Range request); otherwise, or when another
// download of the same URL holds it, a fresh file is used: unnamed where the file system
// allows, else under a unique name.
func (s *spool) open(url string, resume bool) (*spoolFile, error) {
	var hx [32]byte
	urlHashTo(&hx, url)
	key := s.prefix + "-" + string(hx[:]) // one allocation: the conversion stays on the stack
	sf := &spoolFile{s: s, url: url}
	// The paths are marked in use before any file is touched, so that neither removeURL nor
	// sweep (which check the marks under s.mu) removes them under this download.
	s.mu.Lock()
	mayMeta := s.metas[key]
	if resume && !s.busy[key] {
		s.busy[key] = true
		sf.key = key
		sf.path = s.pathOf2(key, partSuffix)
		sf.metaPath = s.pathOf2(key, metaSuffix)
		s.inUse[sf.metaPath] = true
		s.inUse[sf.path] = true
	}
	s.mu.Unlock()
	if sf.key == "" {
		if f := s.openUnnamed(); f != nil {
			sf.f, sf.unnamed = f, true
			return sf, nil
		}
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		sf.path = s.pathOf(key + "-" + hex.EncodeToString(rnd[:]) + tmpSuffix)
		s.mu.Lock()
		s.inUse[sf.path] = true
		s.mu.Unlock()
	}
	if sf.key != "" {
		if m, ok := sf.readMetaIf(mayMeta); ok && m.URL == url && m.Validator != "" {
			// A kept partial body: reopen it and offer its bytes for a Range request.
			f, err := blobstore.OpenFile(sf.path, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				sf.release()
				return nil, fmt.Errorf("spool: %w", err)
			}
			sf.f, sf.metaExists = f, true
			// Its age (for other fetchers' sweeps) counts from now: it is in use again.
			now := s.clk.Now()
			_ = os.Chtimes(sf.path, now, now)
			_ = os.Chtimes(sf.metaPath, now, now)
			if st, err := f.Stat(); err == nil && st.Size() > 0 && (m.Total <= 0 || st.Size() < m.Total) {
				sf.meta, sf.size = m, st.Size()
			}
			if sf.size == 0 {
				if err := sf.reset(); err != nil {
					sf.discard()
					return nil, err
				}
			} else if _, err := f.Seek(sf.size, io.SeekStart); err != nil {
				sf.discard()
				return nil, fmt.Errorf("spool: %w", err)
			}
			return sf, nil
		}
		if f := s.openUnnamed(); f != nil {
			// Named when it becomes worth resuming (writeMeta).
			sf.f, sf.unnamed = f, true
			return sf, nil
		}
		f, err := blobstore.OpenFile(sf.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			sf.release()
			return nil, fmt.Errorf("spool: %w", err)
		}
		sf.f = f
		return sf, nil
	}
	f, err := blobstore.OpenFile(sf.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		sf.release()
		return nil, fmt.Errorf("spool: %w", err)
	}
	sf.f = f
	return sf, nil
}

// readMetaIf is readMeta when the sidecar may exist (see spool.metas).
func (sf *spoolFile) readMetaIf(mayExist bool) (spoolMeta, bool) {
	if !mayExist {
		return spoolMeta{}, false
	}
	return sf.readMeta()
}

func (sf *spoolFile) readMeta() (spoolMeta, bool) {
	var m spoolMeta
	b, err := os.ReadFile(sf.metaPath)
	if err != nil || json.Unmarshal(b, &m) != nil {
		return m, false
	}
	return m, true
}

// resumeFrom returns the offset and validator for a Range/If-Range request, or 0, "".
func (sf *spoolFile) resumeFrom() (int64, string) {
	if sf.key == "" || sf.size == 0 || sf.meta.Validator == "" {
		return 0, ""
	}
	return sf.size, sf.meta.Validator
}

// reset empties the file: the download starts over.
func (sf *spoolFile) reset() error {
	sf.size = 0
	sf.synced = 0
	sf.meta = spoolMeta{URL: sf.url}
	if err := sf.removeMeta(); err != nil {
		return err
	}
	if err := sf.f.Truncate(0); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if _, err := sf.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// setValidator records the validator and total size of the response being written, so that a
// later attempt can resume it. An empty validator makes the file non-resumable.
func (sf *spoolFile) setValidator(validator string, total int64) error {
	sf.meta = spoolMeta{URL: sf.url, Validator: validator, Total: total}
	sf.metaPending = false
	if sf.key == "" {
		return nil
	}
	if validator == "" {
		return sf.removeMeta()
	}
	if sf.size < sf.s.metaAfter {
		// Written by Write once enough bytes arrived, or by abandon when the partial is kept.
		// A stale sidecar of an earlier response must not describe the new bytes meanwhile.
		sf.metaPending = true
		return sf.removeMeta()
	}
	return sf.writeMeta()
}

// writeMeta writes the sidecar for sf.meta, naming an unnamed file first (a sidecar never
// describes a body that has no name).
func (sf *spoolFile) writeMeta() error {
	sf.metaPending = false
	if err := sf.name(); err != nil {
		return err
	}
	b, err := json.Marshal(sf.meta)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	sf.metaExists = true
	sf.s.mu.Lock()
	sf.s.metas[sf.key] = true
	sf.s.mu.Unlock()
	if err := os.WriteFile(sf.metaPath, b, 0o644); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// name links an unnamed keyed file under its name sf.path. A file already there is a stale one
// of this fetcher (the keyed name is this download's: s.busy; a named open truncates it), and
// is replaced.
func (sf *spoolFile) name() error {
	if !sf.unnamed {
		return nil
	}
	err := sf.s.linker.Link(sf.f, sf.path)
	if errors.Is(err, fs.ErrExist) {
		if err = os.Remove(sf.path); err == nil || errors.Is(err, fs.ErrNotExist) {
			err = sf.s.linker.Link(sf.f, sf.path)
		}
	}
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	sf.unnamed = false
	// Under its name from now on (a commit renames it by its Name).
	f, err := atomicfile.Rename(sf.f, sf.path)
	if err != nil {
		sf.f = nil // closed: sf.path is left for finish to remove
		return fmt.Errorf("spool: %w", err)
	}
	sf.f = f
	return nil
}

// removeMeta deletes the sidecar, if there may be one.
func (sf *spoolFile) removeMeta() error {
	if !sf.metaExists || sf.metaPath == "" {
		return nil
	}
	if err := os.Remove(sf.metaPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	sf.metaExists = false
	sf.s.mu.Lock()
	delete(sf.s.metas, sf.key)
	sf.s.mu.Unlock()
	return nil
}

// writebackChunk: every this many bytes, writeback of the new data is started, so that the
// fsync before commit has little left to do.
const writebackChunk = 8 << 20

// Write appends p.
func (sf *spoolFile) Write(p []byte) (int, error) {
	n, err := sf.f.Write(p)
	sf.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("spool: %w", err)
	}
	if sf.metaPending && sf.size >= sf.s.metaAfter {
		if err := sf.writeMeta(); err != nil {
			return n, err
		}
	}
	if sf.size-sf.synced >= writebackChunk {
		blobstore.StartWriteback(sf.f, sf.synced, sf.size-sf.synced)
		sf.synced = sf.size
	}
	return n, nil
}

// hashPrefix feeds the bytes already in the file to w (the digest of a resumed download) and
// returns the file's first bytes (up to 1024) for content validation.
func (sf *spoolFile) hashPrefix(w io.Writer) ([]byte, error) {
	head := make([]byte, min(sf.size, 1024))
	if _, err := sf.f.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if _, err := io.Copy(w, io.NewSectionReader(sf.f, 0, sf.size)); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return head, nil
}

// takeFile hands the open file over to the caller (a commit), which closes it.
func (sf *spoolFile) takeFile() *os.File {
	f := sf.f
	sf.f = nil
	return f
}

// closeFile closes the file handle (before an upload reads it back).
func (sf *spoolFile) closeFile() error {
	if sf.f == nil {
		return nil
	}
	err := sf.f.Close()
	sf.f = nil
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// finish forgets a file that was committed (renamed or linked away) or uploaded: it removes
// whatever is left and releases the key. An unnamed file vanishes when closed.
func (sf *spoolFile) finish() {
	_ = sf.closeFile()
	if !sf.committed && !sf.unnamed {
		_ = os.Remove(sf.path)
	}
	_ = sf.removeMeta()
	sf.release()
}

// abandon ends a failed download: a keyed file with a validator and at least minBytes is kept
// for a later Range resume when keep is set (an unnamed one is named then, with its sidecar);
// anything else is removed. A file that is no longer linked under its name (another fetcher
// finished the URL and removed it) is not kept: a sidecar written since would otherwise
// describe a body that is gone.
func (sf *spoolFile) abandon(keep bool, minBytes int64) {
	// An unnamed file with a validator whose sidecar is not pending failed to be named.
	named := sf.linked() || (sf.unnamed && sf.metaPending)
	if keep && sf.key != "" && sf.meta.Validator != "" && sf.size >= minBytes && named {
		if sf.metaPending && sf.writeMeta() != nil {
			sf.discard()
			return
		}
		_ = sf.closeFile()
		sf.release()
		return
	}
	sf.discard()
}

// linked reports whether the open file is still the one named sf.path.
func (sf *spoolFile) linked() bool {
	if sf.f == nil || sf.unnamed {
		return false
	}
	open, err := sf.f.Stat()
	if err != nil {
		return false
	}
	named, err := os.Stat(sf.path)
	return err == nil && os.SameFile(open, named)
}

// discard removes the file and its sidecar.
func (sf *spoolFile) discard() { sf.finish() }

// release unmarks the file's paths and key: they may be reused, swept or removed again.
func (sf *spoolFile) release() {
	if sf.released {
		return
	}
	sf.released = true
	sf.s.mu.Lock()
	delete(sf.s.inUse, sf.path)
	if sf.key != "" {
		delete(sf.s.inUse, sf.metaPath)
		delete(sf.s.busy, sf.key)
	}
	sf.s.mu.Unlock()
}

// removeURL removes every spool file of url (bodies, resumable or not, and sidecars), whichever
// fetcher wrote it, except those of this spool's running downloads. It is called once url is
// finished: stored, or failed permanently, so no partial of it will ever be useful. A running
// download of another fetcher whose file is removed keeps writing to the unlinked file and then
// fails cleanly: its commit (a rename, or a re-open for an upload) no longer finds the file, a
// transient failure, unless the identical content is already stored. It returns how many files
// it removed.
func (s *spool) removeURL(url string) (int, error) {
	h := urlHash(url)
	entries, err := readDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	part, meta, tmp := "-"+h+partSuffix, "-"+h+metaSuffix, "-"+h+"-"
	var matches []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		if strings.HasSuffix(name, part) || strings.HasSuffix(name, meta) ||
			(strings.HasSuffix(name, tmpSuffix) && strings.Contains(name, tmp)) {
			matches = append(matches, s.pathOf(name))
		}
	}
	if len(matches) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(matches)
}

// removeLocked removes the files in paths that no running download of this spool uses,
// ignoring those already gone; s.mu must be held.
func (s *spool) removeLocked(paths []string) (int, error) {
	n := 0
	var errs []error
	for _, p := range paths {
		if s.inUse[p] {
			continue
		}
		if err := os.Remove(p); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		n++
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("spool: %w", err)
	}
	return n, nil
}

// sweep removes the spool files (and any other temporary file, named with
// blobstore.TempSuffix, in the spool folder) that were not modified since cutoff and are not
// used by a running download of this spool: those of killed fetchers, and partials never
// resumed. Writing a file updates its modification time, so a download that is receiving
// bytes is never swept, and a partial kept for resuming ages from its last write. A resumable
// body and its sidecar go together: their age is that of the newer of the two. It returns how
// many files it removed.
func (s *spool) sweep(cutoff time.Time) (int, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("spool sweep: %w", err)
	}
	type group struct {
		paths  []string
		newest time.Time
	}
	groups := map[string]*group{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, blobstore.TempSuffix) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		stem := name
		if b, ok := strings.CutSuffix(name, partSuffix); ok {
			stem = b
		} else if b, ok := strings.CutSuffix(name, metaSuffix); ok {
			stem = b
		}
		g := groups[stem]
		if g == nil {
			g = &group{}
			groups[stem] = g
		}
		g.paths = append(g.paths, s.pathOf(name))
		if info.ModTime().After(g.newest) {
			g.newest = info.ModTime()
		}
	}
	var old []string
	for _, g := range groups {
		if g.newest.Before(cutoff) {
			old = append(old, g.paths...)
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(old)
}

// readDir is os.ReadDir (unsorted) without registering the folder with the poller: removeURL
// runs once per stored download.
func readDir(dir string) ([]os.DirEntry, error) {
	f, err := blobstore.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return f.ReadDir(-1)
}
