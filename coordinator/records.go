package coordinator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/paperfetch/paperfetch/internal/validate"
)

// deadBits is the width of memPaper.dead, the bitmap of a paper's candidates that failed
// permanently: every URL of a paper (validate.MaxURLsPerPaper) and every step of a plan
// (maxPlanSteps) has its bit; the constant expressions below fail to compile otherwise.
const deadBits = 16

const (
	_ = uint(deadBits - validate.MaxURLsPerPaper)
	_ = uint(deadBits - maxPlanSteps)
	_ = uint16(1<<deadBits - 1) // fits memPaper.dead
)

// Paper flags. flagCached is persisted; flagDirty and flagCommitting only live in memory.
const (
	flagCached  uint8 = 1 << 0
	flagPlanned uint8 = 1 << 1 // a paper with a DOI: its candidates are its plan's steps
	flagDirty   uint8 = 1 << 7
	// flagCommitting marks, in memory only, a paper written by the commit in progress (set by
	// takeReady, cleared by applied): a filtered ListPapers answered during the commit picks
	// it whatever its state (readview.go).
	flagCommitting uint8 = 1 << 6
	// flagsInMemory are the flags never stored.
	flagsInMemory = flagDirty | flagCommitting
)

// memPaper is the compact in-memory state of one paper (32 bytes). Everything else about a
// paper (its spec, its results) lives in the store and is read on demand.
type memPaper struct {
	// at is a time in unix nanoseconds whose meaning depends on the state: the next attempt
	// while RETRY_WAIT, the finish time once terminal. Read and set it through the accessors
	// named after each meaning (nextAttempt, finishedAt).
	at       int64
	batch    uint32
	host     uint32 // interned host of the current candidate URL
	attempts uint16 // attempts started (the Assign.attempt of the latest lease)
	failures uint16 // failed attempts, counted against MaxAttempts
	dead     uint16 // bitmap of candidate URLs that failed permanently
	state    uint8  // a pb.PaperState value
	urlIdx   uint8  // current candidate URL
	nurls    uint8
	reason   uint8 // last pb.FailureReason
	flags    uint8
}

// nextAttempt is when a RETRY_WAIT paper is queued again (unix nanoseconds).
func (p *memPaper) nextAttempt() int64 { return p.at }

// setNextAttempt sets when a paper entering RETRY_WAIT is queued again (unix nanoseconds).
func (p *memPaper) setNextAttempt(ns int64) { p.at = ns }

// finishedAt is when a terminal paper reached its state (unix nanoseconds).
func (p *memPaper) finishedAt() int64 { return p.at }

// setFinished records when a paper reached a terminal state (unix nanoseconds).
func (p *memPaper) setFinished(ns int64) { p.at = ns }

// recordFixed is the size of the fixed part of an encoded storedPaper.
const recordFixed = 68

const recordVersion = 1

// storedPaper is the stored form of a paper's state: a fixed-size part in the papers bucket
// (all a restart needs, so the reload scans a compact B-tree) and the variable-size fields
// (last error, results) in the results bucket. The spec is stored separately too.
type storedPaper struct {
	state, flags, urlIdx, nurls, reason uint8
	attempts, failures, dead            uint16
	batch, host                         uint32
	idHash                              uint64
	at                                  int64 // as memPaper.at: next attempt or finish time
	createdAt                           int64
	size                                int64
	urlHash, finalHash                  uint64
	lastError, sha256, blobKey          string
	finalURL, contentType               string
	source                              string // route of the stored PDF (results, optional)
}

// nextAttempt is when a RETRY_WAIT paper is queued again (unix nanoseconds).
func (r *storedPaper) nextAttempt() int64 { return r.at }

// sourceName is the route of a succeeded paper's PDF, as the API reports it: "url" for a
// paper stored before sources were recorded.
func (r *storedPaper) sourceName() string {
	if r.source == "" {
		return "url"
	}
	return r.source
}

// finishedAt is when a terminal paper reached its state (unix nanoseconds).
func (r *storedPaper) finishedAt() int64 { return r.at }

func (r *storedPaper) hot() memPaper {
	return memPaper{
		at: r.at, batch: r.batch, host: r.host, attempts: r.attempts, failures: r.failures,
		dead: r.dead, state: r.state, urlIdx: r.urlIdx, nurls: r.nurls, reason: r.reason,
		flags: r.flags &^ flagsInMemory,
	}
}

func (r *storedPaper) setHot(p *memPaper) {
	r.at, r.batch, r.host = p.at, p.batch, p.host
	r.attempts, r.failures, r.dead = p.attempts, p.failures, p.dead
	r.state, r.urlIdx, r.nurls, r.reason = p.state, p.urlIdx, p.nurls, p.reason
	r.flags = p.flags &^ flagsInMemory
}

// marshalFixed encodes the fixed-size part of the record (the papers bucket).
func (r *storedPaper) marshalFixed(dst []byte) []byte {
	var f [recordFixed]byte
	f[0] = recordVersion
	f[1], f[2], f[3], f[4], f[5] = r.state, r.flags, r.urlIdx, r.nurls, r.reason
	binary.BigEndian.PutUint16(f[6:], r.attempts)
	binary.BigEndian.PutUint16(f[8:], r.failures)
	binary.BigEndian.PutUint16(f[10:], r.dead)
	binary.BigEndian.PutUint32(f[12:], r.batch)
	binary.BigEndian.PutUint32(f[16:], r.host)
	binary.BigEndian.PutUint64(f[20:], r.idHash)
	binary.BigEndian.PutUint64(f[28:], uint64(r.at))
	binary.BigEndian.PutUint64(f[36:], uint64(r.createdAt))
	binary.BigEndian.PutUint64(f[44:], uint64(r.size))
	binary.BigEndian.PutUint64(f[52:], r.urlHash)
	binary.BigEndian.PutUint64(f[60:], r.finalHash)
	return append(dst, f[:]...)
}

// hasResults reports whether the record has variable-size fields (the results bucket).
func (r *storedPaper) hasResults() bool {
	return r.lastError != "" || r.sha256 != "" || r.blobKey != "" || r.finalURL != "" || r.contentType != "" || r.source != ""
}

// marshalResults encodes the variable-size fields.
func (r *storedPaper) marshalResults(dst []byte) []byte {
	for _, s := range [...]string{r.lastError, r.sha256, r.blobKey, r.finalURL, r.contentType} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	if r.source != "" { // optional trailing field: records written before it decode unchanged
		dst = binary.AppendUvarint(dst, uint64(len(r.source)))
		dst = append(dst, r.source...)
	}
	return dst
}

var errBadRecord = errors.New("malformed paper record")

// unmarshalFixed decodes only the fixed part (enough to rebuild the in-memory state).
func (r *storedPaper) unmarshalFixed(b []byte) error {
	if len(b) < recordFixed || b[0] != recordVersion {
		return errBadRecord
	}
	r.state, r.flags, r.urlIdx, r.nurls, r.reason = b[1], b[2], b[3], b[4], b[5]
	r.attempts = binary.BigEndian.Uint16(b[6:])
	r.failures = binary.BigEndian.Uint16(b[8:])
	r.dead = binary.BigEndian.Uint16(b[10:])
	r.batch = binary.BigEndian.Uint32(b[12:])
	r.host = binary.BigEndian.Uint32(b[16:])
	r.idHash = binary.BigEndian.Uint64(b[20:])
	r.at = int64(binary.BigEndian.Uint64(b[28:]))
	r.createdAt = int64(binary.BigEndian.Uint64(b[36:]))
	r.size = int64(binary.BigEndian.Uint64(b[44:]))
	r.urlHash = binary.BigEndian.Uint64(b[52:])
	r.finalHash = binary.BigEndian.Uint64(b[60:])
	return nil
}

// unmarshalResults decodes the variable-size fields (nil b: none).
func (r *storedPaper) unmarshalResults(b []byte) error {
	r.lastError, r.sha256, r.blobKey, r.finalURL, r.contentType, r.source = "", "", "", "", "", ""
	if len(b) == 0 {
		return nil
	}
	for _, dst := range [...]*string{&r.lastError, &r.sha256, &r.blobKey, &r.finalURL, &r.contentType} {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return fmt.Errorf("%w: truncated string", errBadRecord)
		}
		*dst = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return fmt.Errorf("%w: truncated source", errBadRecord)
		}
		r.source = string(b[k : k+int(n)])
	}
	return nil
}

// chunkRecord is the stored form of an accepted chunk of a batch.
type chunkRecord struct {
	hash      [32]byte
	first, n  uint32
	createdAt int64
}

const chunkRecordSize = 48

func (c *chunkRecord) marshal() []byte {
	b := make([]byte, chunkRecordSize)
	copy(b, c.hash[:])
	binary.BigEndian.PutUint32(b[32:], c.first)
	binary.BigEndian.PutUint32(b[36:], c.n)
	binary.BigEndian.PutUint64(b[40:], uint64(c.createdAt))
	return b
}

func (c *chunkRecord) unmarshal(b []byte) error {
	if len(b) != chunkRecordSize {
		return errors.New("malformed chunk record")
	}
	copy(c.hash[:], b)
	c.first = binary.BigEndian.Uint32(b[32:])
	c.n = binary.BigEndian.Uint32(b[36:])
	c.createdAt = int64(binary.BigEndian.Uint64(b[40:]))
	return nil
}

// batchRecord is the stored form of a batch (JSON: written rarely).
type batchRecord struct {
	ID           string            `json:"id"`
	State        int32             `json:"state"`
	CreatedAt    int64             `json:"created_at"`
	SealedAt     int64             `json:"sealed_at,omitempty"`
	FinishedAt   int64             `json:"finished_at,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	ContentHash  []byte            `json:"content_hash,omitempty"`
	Chunked      bool              `json:"chunked,omitempty"`
	CancelReason string            `json:"cancel_reason,omitempty"`
	Deleting     bool              `json:"deleting,omitempty"` // being deleted (delete.go)
}

func key32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

func chunkKey(batch uint32, index int64) []byte {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:], batch)
	binary.BigEndian.PutUint64(b[4:], uint64(index))
	return b[:]
}

// hashString is the 64-bit FNV-1a hash of s, used for the in-memory indexes (stable across
// restarts, unlike maphash). Hits are always verified against the store.
func hashString(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// batchKey mixes a paper id hash with its batch into the per-batch index key.
func batchKey(idHash uint64, batch uint32) uint64 {
	z := idHash ^ (uint64(batch)+1)*0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}
