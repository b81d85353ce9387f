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
	"sync"

	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// spool manages the local files downloads are written to before they are committed. A file
// kept for resuming is named after the fetcher id and the URL (never the paper id), with a
// small JSON sidecar holding the validator (ETag or Last-Modified) and the total size, so a
// retry of the same URL can continue with a Range request. Names end in
// blobstore.TempSuffix so that, inside a file:// bucket, List never shows them.
type spool struct {
	dir    string
	prefix string // hash of the fetcher id

	mu   sync.Mutex
	busy map[string]bool // keyed spool files in use
}

func newSpool(dir, fetcherID string) (*spool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("spool folder: %w", err)
	}
	h := sha256.Sum256([]byte(fetcherID))
	return &spool{dir: dir, prefix: hex.EncodeToString(h[:4]), busy: map[string]bool{}}, nil
}

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
	// metaExists: the sidecar may exist on disk.
	metaExists bool
}

// open returns the spool file for url. With resume, the file kept by an earlier attempt for the
// same URL is reopened (its bytes are offered for a Range request); otherwise, or when another
// download of the same URL holds it, a fresh unique file is used.
func (s *spool) open(url string, resume bool) (*spoolFile, error) {
	h := sha256.Sum256([]byte(url))
	key := s.prefix + "-" + hex.EncodeToString(h[:16])
	sf := &spoolFile{s: s, url: url}
	s.mu.Lock()
	if resume && !s.busy[key] {
		s.busy[key] = true
		sf.key = key
	}
	s.mu.Unlock()
	if sf.key != "" {
		sf.path = filepath.Join(s.dir, key+".part"+blobstore.TempSuffix)
		sf.metaPath = filepath.Join(s.dir, key+".meta"+blobstore.TempSuffix)
		if m, ok := sf.readMeta(); ok && m.URL == url && m.Validator != "" {
			// A kept partial body: reopen it and offer its bytes for a Range request.
			f, err := os.OpenFile(sf.path, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				sf.releaseKey()
				return nil, fmt.Errorf("spool: %w", err)
			}
			sf.f, sf.metaExists = f, true
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
		f, err := os.OpenFile(sf.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			sf.releaseKey()
			return nil, fmt.Errorf("spool: %w", err)
		}
		sf.f = f
		return sf, nil
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	sf.path = filepath.Join(s.dir, key+"-"+hex.EncodeToString(rnd[:])+".tmp"+blobstore.TempSuffix)
	f, err := os.OpenFile(sf.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	sf.f = f
	return sf, nil
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
	if sf.key == "" {
		return nil
	}
	if validator == "" {
		return sf.removeMeta()
	}
	b, err := json.Marshal(sf.meta)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	sf.metaExists = true
	if err := os.WriteFile(sf.metaPath, b, 0o644); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
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

// finish forgets a file that was committed (renamed away) or uploaded: it removes whatever is
// left and releases the key.
func (sf *spoolFile) finish() {
	_ = sf.closeFile()
	_ = os.Remove(sf.path)
	_ = sf.removeMeta()
	sf.releaseKey()
}

// abandon ends a failed download: a keyed file with a validator and at least minBytes is kept
// for a later Range resume when keep is set; anything else is removed.
func (sf *spoolFile) abandon(keep bool, minBytes int64) {
	if keep && sf.key != "" && sf.meta.Validator != "" && sf.size >= minBytes {
		_ = sf.closeFile()
		sf.releaseKey()
		return
	}
	sf.discard()
}

// discard removes the file and its sidecar.
func (sf *spoolFile) discard() { sf.finish() }

func (sf *spoolFile) releaseKey() {
	if sf.key == "" || sf.released {
		return
	}
	sf.released = true
	sf.s.mu.Lock()
	delete(sf.s.busy, sf.key)
	sf.s.mu.Unlock()
}
