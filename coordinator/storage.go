package coordinator

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// storage is the engine's read-only view of the committed state, as etcd-io/raft's Storage is
// the raft node's: the specs, records and plans of papers, the DOI cache entries and, for a
// reload, everything that rebuilds the in-memory state. The engine never sees a transaction,
// a bucket or an encoding of the store; it writes only through the writeSet of its Ready,
// which the loop commits.
//
// Every read between two commits sees one kvSnapshot (taken at the first read); the loop
// releases it (release) before each commit, so that reads after the commit see it.
type storage interface {
	// spec returns a paper's encoded PaperSpec.
	spec(idx uint32) ([]byte, error)
	// paper reads a paper's record and, when spec is not nil, its spec; errRecordMissing
	// when the paper was deleted.
	paper(idx uint32, rec *storedPaper, spec *pb.PaperSpec) error
	// plan returns the encoded plan of a paper with a DOI (nil when it has none).
	plan(idx uint32) ([]byte, error)
	// doiPaper returns the SUCCEEDED paper that is the cache entry of a normalised DOI.
	doiPaper(doi string) (idx uint32, ok bool, err error)

	// For a reload, in this order: hosts, batches, chunks, then papers by index (only the
	// fixed part of their records), and the blobs released but not yet collected.
	hosts(fn func(idx uint32, name string) error) error
	batches(fn func(idx uint32, rec *batchRecord) error) error
	chunks(fn func(batch uint32, index int64, rec chunkRecord) error) error
	lastPaper() (idx uint32, ok bool, err error)
	papers(fn func(idx uint32, rec *storedPaper) error) error
	collectable() ([]string, error)
	// damaged returns the blobs found damaged and not repaired since (damaged.go).
	damaged() ([]string, error)
	// marks returns indexes above every deleted paper and batch (0: none deleted).
	marks() (nextPaper, nextBatch uint32, err error)

	// release ends the current kvSnapshot.
	release()
}

// kvSnapshot is the storage of a kvStore: one read transaction, begun at the first read and
// ended by release.
type kvSnapshot struct {
	kv      kvStore
	tx      kvTx
	end     func()
	buckets *paperBuckets // the paper buckets of tx, looked up at its first paper read
}

func newKVSnapshot(kv kvStore) *kvSnapshot { return &kvSnapshot{kv: kv} }

func (s *kvSnapshot) view() (kvTx, error) {
	if s.tx == nil {
		tx, end, err := s.kv.view()
		if err != nil {
			return nil, err
		}
		s.tx, s.end = tx, end
	}
	return s.tx, nil
}

func (s *kvSnapshot) release() {
	if s.end != nil {
		s.end()
	}
	s.tx, s.end, s.buckets = nil, nil, nil
}

func (s *kvSnapshot) spec(idx uint32) ([]byte, error) {
	b, err := s.paperBuckets()
	if err != nil {
		return nil, err
	}
	raw := b.specs.Get(key32(idx))
	if raw == nil {
		return nil, fmt.Errorf("%w: spec of paper %d missing", errInternal, idx)
	}
	return raw, nil
}

func (s *kvSnapshot) paper(idx uint32, rec *storedPaper, spec *pb.PaperSpec) error {
	b, err := s.paperBuckets()
	if err != nil {
		return err
	}
	return b.read(idx, rec, spec)
}

// paperBuckets returns the paper buckets of the snapshot, looked up at its first paper or spec
// read: the engine reads a spec per Assign, and a read-only bbolt transaction builds a new
// Bucket on every lookup, Bucket.Get a new cursor.
func (s *kvSnapshot) paperBuckets() (*paperBuckets, error) {
	if s.buckets == nil {
		tx, err := s.view()
		if err != nil {
			return nil, err
		}
		b := openPaperBuckets(tx)
		s.buckets = &b
	}
	return s.buckets, nil
}

func (s *kvSnapshot) plan(idx uint32) ([]byte, error) {
	tx, err := s.view()
	if err != nil {
		return nil, err
	}
	return tx.bucket(bucketPlans).Get(key32(idx)), nil
}

func (s *kvSnapshot) doiPaper(doi string) (uint32, bool, error) {
	tx, err := s.view()
	if err != nil {
		return 0, false, err
	}
	v := tx.bucket(bucketDOIs).Get([]byte(doi))
	if len(v) != 4 {
		return 0, false, nil
	}
	return binary.BigEndian.Uint32(v), true, nil
}

func (s *kvSnapshot) hosts(fn func(uint32, string) error) error {
	tx, err := s.view()
	if err != nil {
		return err
	}
	return tx.bucket(bucketHosts).ForEach(func(k, v []byte) error {
		if len(k) != 4 {
			return fmt.Errorf("host key %x malformed", k)
		}
		return fn(binary.BigEndian.Uint32(k), string(v))
	})
}

func (s *kvSnapshot) batches(fn func(uint32, *batchRecord) error) error {
	tx, err := s.view()
	if err != nil {
		return err
	}
	return tx.bucket(bucketBatches).ForEach(func(k, v []byte) error {
		if len(k) != 4 {
			return fmt.Errorf("batch key %x malformed", k)
		}
		var r batchRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("batch %x: %w", k, err)
		}
		return fn(binary.BigEndian.Uint32(k), &r)
	})
}

func (s *kvSnapshot) chunks(fn func(uint32, int64, chunkRecord) error) error {
	tx, err := s.view()
	if err != nil {
		return err
	}
	return tx.bucket(bucketChunks).ForEach(func(k, v []byte) error {
		if len(k) != 12 {
			return fmt.Errorf("chunk key %x malformed", k)
		}
		var rec chunkRecord
		if err := rec.unmarshal(v); err != nil {
			return err
		}
		return fn(binary.BigEndian.Uint32(k), int64(binary.BigEndian.Uint64(k[4:])), rec)
	})
}

func (s *kvSnapshot) lastPaper() (uint32, bool, error) {
	tx, err := s.view()
	if err != nil {
		return 0, false, err
	}
	k := tx.bucket(bucketPapers).last()
	if len(k) != 4 {
		return 0, false, nil
	}
	return binary.BigEndian.Uint32(k), true, nil
}

func (s *kvSnapshot) papers(fn func(uint32, *storedPaper) error) error {
	tx, err := s.view()
	if err != nil {
		return err
	}
	var rec storedPaper
	return tx.bucket(bucketPapers).ForEach(func(k, v []byte) error {
		if len(k) != 4 {
			return fmt.Errorf("paper key %x malformed", k)
		}
		idx := binary.BigEndian.Uint32(k)
		if err := rec.unmarshalFixed(v); err != nil {
			return fmt.Errorf("paper %d: %w", idx, err)
		}
		return fn(idx, &rec)
	})
}

func (s *kvSnapshot) collectable() ([]string, error) { return s.keys(bucketBlobGC) }

func (s *kvSnapshot) damaged() ([]string, error) { return s.keys(bucketDamaged) }

// keys returns the keys of a bucket of blob keys (bounded by what enters it).
func (s *kvSnapshot) keys(bucket string) ([]string, error) {
	tx, err := s.view()
	if err != nil {
		return nil, err
	}
	var keys []string
	err = tx.bucket(bucket).ForEach(func(k, _ []byte) error {
		keys = append(keys, string(k))
		return nil
	})
	return keys, err
}

func (s *kvSnapshot) marks() (uint32, uint32, error) {
	tx, err := s.view()
	if err != nil {
		return 0, 0, err
	}
	meta := tx.bucket(bucketMeta)
	var marks [2]uint32
	for i, key := range [...]string{metaNextPaper, metaNextBatch} {
		if v := meta.Get([]byte(key)); len(v) == 4 {
			marks[i] = binary.BigEndian.Uint32(v)
		}
	}
	return marks[0], marks[1], nil
}
