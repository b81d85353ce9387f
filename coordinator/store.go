package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Bucket names. Keys of papers, specs, batches and hosts are sequence numbers that only grow,
// so inserts append to the B-trees instead of splitting random pages.
const (
	bucketMeta    = "meta"
	bucketBatches = "batches" // batch index (4 B) -> batchRecord JSON
	bucketChunks  = "chunks"  // batch index (4 B) + chunk index (8 B) -> chunkRecord
	bucketPapers  = "papers"  // paper index (4 B) -> storedPaper
	bucketSpecs   = "specs"   // paper index (4 B) -> PaperSpec (deterministic proto)
	bucketResults = "results" // paper index (4 B) -> variable fields of storedPaper (errors, results)
	bucketHosts   = "hosts"   // host index (4 B) -> host name
	bucketPlans   = "plans"   // paper index (4 B) -> plan of a paper with a DOI (plan.go)
	bucketDOIs    = "dois"    // normalised DOI -> index (4 B) of a SUCCEEDED paper with it (the DOI cache)

	metaStoreID  = "store_id"
	metaLeaseKey = "lease_key" // 32 random bytes: the HMAC key of lease ids (see leaseIDs)
)

// ErrStoreLocked is returned by Open when another process holds the store.
var ErrStoreLocked = errors.New("coordinator store is locked by another process")

// store is the durable state of the coordinator: a bbolt file. It is written only by the
// owner loop (one read-write transaction per loop iteration); handlers may read committed
// records concurrently through read-only transactions.
type store struct {
	db       *bolt.DB // nil for an in-memory store (tests)
	kv       kvStore
	id       string // random id of this store, part of every lease id
	leaseKey []byte // secret key of the lease ids' MACs
	refs     refLog // the references not yet counted (store_delete.go)
}

// openStore opens (creating if needed) the store in dir, failing after lockTimeout when
// another process holds its lock.
func openStore(dir string, lockTimeout time.Duration, noSync bool) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, "coordinator.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         lockTimeout,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  false,
		InitialMmapSize: 256 << 20,
		NoSync:          noSync,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (is another coordinator running on this data directory?): %w", ErrStoreLocked, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &store{db: db, kv: boltKV{db}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketMeta, bucketBatches, bucketChunks, bucketPapers, bucketSpecs, bucketResults, bucketHosts, bucketPlans, bucketDOIs} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		if err := initBlobRefs(tx, boltTx{tx}); err != nil {
			return err
		}
		meta := tx.Bucket([]byte(bucketMeta))
		if k := meta.Get([]byte(metaLeaseKey)); len(k) == 32 {
			s.leaseKey = append([]byte(nil), k...)
		} else {
			s.leaseKey = make([]byte, 32)
			if _, err := rand.Read(s.leaseKey); err != nil {
				return err
			}
			if err := meta.Put([]byte(metaLeaseKey), s.leaseKey); err != nil {
				return err
			}
		}
		if id := meta.Get([]byte(metaStoreID)); id != nil {
			s.id = string(id)
			return nil
		}
		var raw [6]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return err
		}
		s.id = hex.EncodeToString(raw[:])
		return meta.Put([]byte(metaStoreID), []byte(s.id))
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialise store %s: %w", path, err)
	}
	return s, nil
}

// close folds the references still pending in newrefs (at most foldRefsAt plus one commit's;
// none when nothing was committed since the open, which folds them), so that a store closed
// normally holds complete counts that an earlier version reads as they are, then closes it.
func (s *store) close() error {
	if s.db == nil {
		return nil
	}
	var ferr error
	if s.refs.known && s.refs.n > 0 {
		ferr = s.kv.update(func(tx kvTx) error {
			_, err := foldRefs(tx)
			return err
		})
		if ferr == nil {
			s.refs.n = 0
		} else {
			ferr = fmt.Errorf("close store: fold blob refs: %w", ferr)
		}
	}
	if err := s.db.Close(); err != nil {
		return errors.Join(ferr, fmt.Errorf("close store: %w", err))
	}
	return ferr
}

// readPaper returns a paper's stored record and spec.
func (s *store) readPaper(idx uint32) (*storedPaper, *pb.PaperSpec, error) {
	var rec storedPaper
	spec := &pb.PaperSpec{}
	tx, end, err := s.kv.view()
	if err != nil {
		return nil, nil, err
	}
	defer end()
	if err := readPaperTx(tx, idx, &rec, spec); err != nil {
		return nil, nil, err
	}
	return &rec, spec, nil
}

// readPapers reads several papers in one transaction.
func (s *store) readPapers(idxs []uint32) ([]storedPaper, []*pb.PaperSpec, error) {
	recs := make([]storedPaper, len(idxs))
	specs := make([]*pb.PaperSpec, len(idxs))
	backing := make([]pb.PaperSpec, len(idxs)) // one allocation for the specs
	err := s.eachPaper(idxs, func(b paperBuckets, i int, idx uint32) error {
		specs[i] = &backing[i]
		return b.read(idx, &recs[i], specs[i])
	})
	if err != nil {
		return nil, nil, err
	}
	return recs, specs, nil
}

// eachPaper calls read for each paper of idxs (its position i and index idx) with the paper
// buckets of one read transaction, stopping at the first error; what read keeps of the
// buckets' bytes must be copied (they are valid only inside the transaction).
func (s *store) eachPaper(idxs []uint32, read func(b paperBuckets, i int, idx uint32) error) error {
	tx, end, err := s.kv.view()
	if err != nil {
		return err
	}
	defer end()
	b := openPaperBuckets(tx)
	for i, idx := range idxs {
		if err := read(b, i, idx); err != nil {
			return err
		}
	}
	return nil
}

// specRef is what a watch update shows of a paper's spec: its id, and the URL of its current
// candidate (urls[urlIdx]; "" when the spec has no such URL, as for a paper with a DOI whose
// current candidate is a step of its plan).
type specRef struct{ id, url string }

// readUpdates reads several papers' records in one transaction, with the part of their spec a
// watch update shows (specRefOf: the spec is not decoded whole; the URL only for a paper that
// is not SUCCEEDED, whose update shows its final URL instead).
func (s *store) readUpdates(idxs []uint32) ([]storedPaper, []specRef, error) {
	recs := make([]storedPaper, len(idxs))
	refs := make([]specRef, len(idxs))
	err := s.eachPaper(idxs, func(b paperBuckets, i int, idx uint32) error {
		if err := b.read(idx, &recs[i], nil); err != nil {
			return err
		}
		sv := b.specs.Get(key32(idx))
		if sv == nil {
			return fmt.Errorf("paper %d: spec missing", idx)
		}
		urlIdx := -1
		if recs[i].state != stateSucceeded {
			urlIdx = int(recs[i].urlIdx)
		}
		var err error
		if refs[i], err = specRefOf(sv, urlIdx); err != nil {
			return fmt.Errorf("paper %d: spec: %w", idx, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return recs, refs, nil
}

// specRefOf reads the paper id (field 1) and, when urlIdx >= 0, the URL urls[urlIdx] (field
// 2) of an encoded PaperSpec, skipping every other field: what proto.Unmarshal followed by
// GetPaperId and GetUrls()[urlIdx] reads (the last paper_id wins), without decoding the rest.
func specRefOf(raw []byte, urlIdx int) (specRef, error) {
	var ref specRef
	urls := 0
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return ref, protowire.ParseError(n)
		}
		raw = raw[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(raw)
			if m < 0 {
				return ref, protowire.ParseError(m)
			}
			raw = raw[m:]
			if num == 1 {
				ref.id = string(v)
				continue
			}
			if urls == urlIdx {
				ref.url = string(v)
			}
			urls++
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, raw)
		if m < 0 {
			return ref, protowire.ParseError(m)
		}
		raw = raw[m:]
	}
	return ref, nil
}

// readPaperTx reads a paper's record and, when spec is not nil, its spec.
func readPaperTx(tx kvTx, idx uint32, rec *storedPaper, spec *pb.PaperSpec) error {
	return openPaperBuckets(tx).read(idx, rec, spec)
}

// paperBuckets are the buckets a paper is read from, looked up once per transaction for
// reads of many papers (a read-only bbolt transaction builds a new Bucket on every lookup),
// each read through one reused cursor (getterOf): one goroutine's, within tx.
type paperBuckets struct{ papers, results, specs kvGetter }

// openPaperBuckets looks up the paper buckets of tx.
func openPaperBuckets(tx kvTx) paperBuckets {
	return paperBuckets{papers: getterOf(tx.bucket(bucketPapers)), results: getterOf(tx.bucket(bucketResults)), specs: getterOf(tx.bucket(bucketSpecs))}
}

// read reads a paper's record and, when spec is not nil, its spec.
func (b paperBuckets) read(idx uint32, rec *storedPaper, spec *pb.PaperSpec) error {
	k := key32(idx)
	v := b.papers.Get(k)
	if v == nil {
		return fmt.Errorf("paper %d: %w", idx, errRecordMissing)
	}
	if err := rec.unmarshalFixed(v); err != nil {
		return fmt.Errorf("paper %d: %w", idx, err)
	}
	if err := rec.unmarshalResults(b.results.Get(k)); err != nil {
		return fmt.Errorf("paper %d: %w", idx, err)
	}
	if spec != nil {
		sv := b.specs.Get(k)
		if sv == nil {
			return fmt.Errorf("paper %d: spec missing", idx)
		}
		if err := proto.Unmarshal(sv, spec); err != nil {
			return fmt.Errorf("paper %d: spec: %w", idx, err)
		}
	}
	return nil
}

// writeSet is everything one loop iteration changed, written in one transaction.
type writeSet struct {
	hosts     []hostWrite
	batches   []batchWrite
	chunks    []chunkWrite
	newPapers []newPaperWrite
	dirty     []dirtyWrite
	plans     []planWrite
	dois      []doiWrite
	deletes   []batchDelete
	newRefs   []string // blob keys of papers that became SUCCEEDED
	collected []string // blob keys deleted from the blob store (leave blobgc)
	damaged   []string // blob keys found damaged (enter the damaged bucket)
	repaired  []string // damaged blob keys written again and verified (leave it)

	// released is an output of commit: blob keys whose last reference was deleted.
	released []string
}

// planWrite stores a paper's plan.
type planWrite struct {
	idx  uint32
	plan []byte
}

// doiWrite records a SUCCEEDED paper as the cache entry of its DOI.
type doiWrite struct {
	doi string
	idx uint32
}

type hostWrite struct {
	idx  uint32
	name string
}

type batchWrite struct {
	idx uint32
	rec batchRecord
}

type chunkWrite struct {
	batch uint32
	index int64
	rec   chunkRecord
}

type newPaperWrite struct {
	idx     uint32
	rec     []byte // fixed part
	results []byte // variable part, nil when empty
	spec    []byte
}

// dirtyWrite updates a stored paper: its hot fields from memory, plus cold fields when set.
type dirtyWrite struct {
	idx  uint32
	hot  memPaper
	cold *coldUpdate
}

// coldUpdate carries the fields of a paper record that are not kept in memory.
type coldUpdate struct {
	setError  bool
	lastError string
	success   bool
	size      int64
	sha256    string
	blobKey   string
	finalURL  string
	ctype     string
	source    string
	urlHash   uint64
	finalHash uint64
}

func (w *writeSet) empty() bool {
	return len(w.hosts) == 0 && len(w.batches) == 0 && len(w.chunks) == 0 && len(w.newPapers) == 0 && len(w.dirty) == 0 &&
		len(w.plans) == 0 && len(w.dois) == 0 && len(w.deletes) == 0 && len(w.newRefs) == 0 && len(w.collected) == 0 &&
		len(w.damaged) == 0 && len(w.repaired) == 0
}

func (w *writeSet) size() int {
	return len(w.hosts) + len(w.batches) + len(w.chunks) + len(w.newPapers) + len(w.dirty) + len(w.plans) + len(w.dois) +
		len(w.deletes) + len(w.newRefs) + len(w.collected) + len(w.damaged) + len(w.repaired)
}

func (w *writeSet) reset() {
	w.hosts = w.hosts[:0]
	w.batches = w.batches[:0]
	w.chunks = w.chunks[:0]
	w.newPapers = w.newPapers[:0]
	w.dirty = w.dirty[:0]
	w.plans = w.plans[:0]
	w.dois = w.dois[:0]
	w.deletes = w.deletes[:0]
	w.newRefs = w.newRefs[:0]
	w.collected = w.collected[:0]
	w.damaged = w.damaged[:0]
	w.repaired = w.repaired[:0]
	w.released = nil
}

// commit writes w in one transaction and syncs it.
func (s *store) commit(w *writeSet) error {
	var refs refLog
	err := s.kv.update(func(tx kvTx) error {
		hb := tx.bucket(bucketHosts)
		for _, h := range w.hosts {
			if err := hb.Put(key32(h.idx), []byte(h.name)); err != nil {
				return fmt.Errorf("host %d: %w", h.idx, err)
			}
		}
		bb := tx.bucket(bucketBatches)
		for _, b := range w.batches {
			v, err := json.Marshal(&b.rec)
			if err != nil {
				return fmt.Errorf("batch %s: %w", b.rec.ID, err)
			}
			if err := bb.Put(key32(b.idx), v); err != nil {
				return fmt.Errorf("batch %s: %w", b.rec.ID, err)
			}
		}
		cb := tx.bucket(bucketChunks)
		for _, c := range w.chunks {
			if err := cb.Put(chunkKey(c.batch, c.index), c.rec.marshal()); err != nil {
				return fmt.Errorf("chunk: %w", err)
			}
		}
		pbk := tx.bucket(bucketPapers)
		sb := tx.bucket(bucketSpecs)
		rb := tx.bucket(bucketResults)
		for _, p := range w.newPapers {
			k := key32(p.idx)
			if err := pbk.Put(k, p.rec); err != nil {
				return fmt.Errorf("paper %d: %w", p.idx, err)
			}
			if err := sb.Put(k, p.spec); err != nil {
				return fmt.Errorf("paper %d spec: %w", p.idx, err)
			}
			if p.results != nil {
				if err := rb.Put(k, p.results); err != nil {
					return fmt.Errorf("paper %d results: %w", p.idx, err)
				}
			}
		}
		var rec storedPaper
		// One cursor per bucket for the reads, and one buffer for the records written (a
		// Put's value must stay valid until the transaction ends).
		pg, rg := getterOf(pbk), getterOf(rb)
		fixed := make([]byte, recordFixed*len(w.dirty))
		for i, d := range w.dirty {
			k := key32(d.idx)
			old := pg.Get(k)
			if old == nil {
				return fmt.Errorf("paper %d: record missing", d.idx)
			}
			if err := rec.unmarshalFixed(old); err != nil {
				return fmt.Errorf("paper %d: %w", d.idx, err)
			}
			rec.setHot(&d.hot)
			c := d.cold
			if c != nil && c.success {
				rec.size, rec.urlHash, rec.finalHash = c.size, c.urlHash, c.finalHash
			}
			if err := pbk.Put(k, rec.marshalFixed(fixed[i*recordFixed:i*recordFixed:(i+1)*recordFixed])); err != nil {
				return fmt.Errorf("paper %d: %w", d.idx, err)
			}
			if c == nil || (!c.setError && !c.success) {
				continue
			}
			if err := rec.unmarshalResults(rg.Get(k)); err != nil {
				return fmt.Errorf("paper %d: %w", d.idx, err)
			}
			if c.setError {
				rec.lastError = c.lastError
			}
			if c.success {
				rec.sha256, rec.blobKey, rec.finalURL, rec.contentType = c.sha256, c.blobKey, c.finalURL, c.ctype
				rec.source = c.source
			}
			if err := rb.Put(k, rec.marshalResults(nil)); err != nil {
				return fmt.Errorf("paper %d results: %w", d.idx, err)
			}
		}
		plb := tx.bucket(bucketPlans)
		for _, p := range w.plans {
			if err := plb.Put(key32(p.idx), p.plan); err != nil {
				return fmt.Errorf("paper %d plan: %w", p.idx, err)
			}
		}
		db := tx.bucket(bucketDOIs)
		for _, d := range w.dois {
			if err := db.Put([]byte(d.doi), key32(d.idx)); err != nil {
				return fmt.Errorf("doi %s: %w", d.doi, err)
			}
		}
		// References first: a cache hit of a paper deleted in the same iteration keeps its blob.
		var err error
		if refs, err = s.commitBlobRefs(tx, w); err != nil {
			return err
		}
		return commitDeletes(tx, w)
	})
	if err != nil {
		return fmt.Errorf("commit store: %w", err)
	}
	s.refs = refs
	return nil
}
