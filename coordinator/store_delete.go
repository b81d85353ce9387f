package coordinator

import (
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Buckets of blob reference counting (see delete.go).
const (
	bucketBlobRefs = "blobrefs" // blob key -> number of SUCCEEDED papers referring to it (4 B)
	bucketBlobGC   = "blobgc"   // blob key -> nothing: released blobs awaiting deletion
	bucketDamaged  = "damaged"  // blob key -> nothing: blobs found damaged, not repaired since (damaged.go)
	// bucketNewRefs holds references not yet counted in blobrefs: sequence number (8 B,
	// growing) -> blob key, one entry per paper that became SUCCEEDED (see foldRefs).
	bucketNewRefs = "newrefs"

	// metaBlobRefs marks a store whose blobrefs bucket is complete and newrefs empty (older
	// stores are counted once, when first opened by a coordinator that deletes).
	metaBlobRefs = "blobrefs_v1"
	// metaRefsPending replaces metaBlobRefs while newrefs holds entries: the count of a
	// blob is its blobrefs value plus its entries in newrefs. Closing the store and opening
	// it fold them, so only a crashed coordinator leaves them. An earlier version opening
	// such a store finds no metaBlobRefs and counts every SUCCEEDED paper again on top of
	// blobrefs: its counts are then too high, so blobs are kept longer, never deleted while
	// referenced.
	metaRefsPending = "blobrefs_pending"

	// foldRefsAt is the number of entries of newrefs at which a commit folds them into
	// blobrefs; it bounds newrefs (foldRefsAt plus one commit's SUCCEEDED papers). A blob key
	// is a content hash, so each counted reference lands on a random page of blobrefs: counted
	// one at a time, a commit of k completions rewrote about k pages of blobrefs; appended
	// to newrefs, they share one or two, and a fold rewrites each page of blobrefs at most
	// once for foldRefsAt of them.
	foldRefsAt = 2048

	// metaNextPaper and metaNextBatch (4 B each) are above every paper and batch index a
	// deletion removed, so that a reload never hands out a deleted index again: a lease id
	// (store, paper index, attempt) then names one download only.
	metaNextPaper = "next_paper"
	metaNextBatch = "next_batch"
)

// raiseMark raises the index mark key of the meta bucket to at least next.
func raiseMark(meta kvBucket, key string, next uint32) error {
	if v := meta.Get([]byte(key)); len(v) == 4 && binary.BigEndian.Uint32(v) >= next {
		return nil
	}
	return meta.Put([]byte(key), key32(next))
}

// batchDelete removes papers of a batch being deleted from the store; the last one of a batch
// removes its chunks and record.
type batchDelete struct {
	idx    uint32
	papers []uint32
	blobs  []string // blob keys of its SUCCEEDED papers (one per paper)
	last   bool
	chunks []int64
}

// initBlobRefs creates the blob reference buckets, counting the references of an older store.
func initBlobRefs(btx *bolt.Tx, tx kvTx) error {
	for _, name := range []string{bucketBlobRefs, bucketBlobGC, bucketDamaged, bucketNewRefs} {
		if _, err := btx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return err
		}
	}
	meta := tx.bucket(bucketMeta)
	if meta.Get([]byte(metaRefsPending)) != nil {
		if _, err := foldRefs(tx); err != nil {
			return fmt.Errorf("count blob references: %w", err)
		}
		return nil
	}
	if meta.Get([]byte(metaBlobRefs)) != nil {
		return nil
	}
	refs := tx.bucket(bucketBlobRefs)
	rb := tx.bucket(bucketResults)
	var rec storedPaper
	err := tx.bucket(bucketPapers).ForEach(func(k, v []byte) error {
		if err := rec.unmarshalFixed(v); err != nil || rec.state != stateSucceeded {
			return err
		}
		if err := rec.unmarshalResults(rb.Get(k)); err != nil {
			return err
		}
		return addBlobRef(refs, rec.blobKey, 1)
	})
	if err != nil {
		return fmt.Errorf("count blob references: %w", err)
	}
	return meta.Put([]byte(metaBlobRefs), []byte{1})
}

// addBlobRef adds delta to key's reference count and returns the new count.
func addBlobRef(refs kvBucket, key string, delta int64) error {
	_, err := addBlobRefCount(refs, key, delta)
	return err
}

func addBlobRefCount(refs kvBucket, key string, delta int64) (int64, error) {
	return addBlobRefVia(refs, refs, key, delta)
}

// addBlobRefVia is addBlobRefCount reading the count through get, a kvGetter of refs (getterOf:
// one cursor for a fold's many lookups).
func addBlobRefVia(refs kvBucket, get kvGetter, key string, delta int64) (int64, error) {
	if key == "" {
		return 0, nil
	}
	var n int64
	if v := get.Get([]byte(key)); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n = max(n+delta, 0)
	if n == 0 {
		return 0, refs.Delete([]byte(key))
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return n, refs.Put([]byte(key), b[:])
}

// refLog is the store's account of newrefs, known once read (pendingRefs): the entries it
// holds and the sequence number of the next one. Only the loop's commit uses it.
type refLog struct {
	known bool
	n     int
	next  uint64
}

// pendingRefs reads the account of newrefs the first time (bounded: see foldRefsAt).
func (s *store) pendingRefs(tx kvTx) (refLog, error) {
	if s.refs.known {
		return s.refs, nil
	}
	l := refLog{known: true}
	nr := tx.bucket(bucketNewRefs)
	if k := nr.last(); len(k) == 8 {
		l.next = binary.BigEndian.Uint64(k) + 1
	}
	err := nr.ForEach(func([]byte, []byte) error {
		l.n++
		return nil
	})
	return l, err
}

// commitBlobRefs counts the blobs of papers that became SUCCEEDED in this transaction:
// appended to newrefs, folded into blobrefs when newrefs reaches foldRefsAt entries or the
// transaction deletes papers (commitDeletes needs the counts). It returns the account of
// newrefs after the transaction.
func (s *store) commitBlobRefs(tx kvTx, w *writeSet) (refLog, error) {
	l, err := s.pendingRefs(tx)
	if err != nil {
		return l, fmt.Errorf("pending blob refs: %w", err)
	}
	if len(w.newRefs) > 0 {
		meta := tx.bucket(bucketMeta)
		if meta.Get([]byte(metaRefsPending)) == nil {
			if err := meta.Delete([]byte(metaBlobRefs)); err != nil {
				return l, err
			}
			if err := meta.Put([]byte(metaRefsPending), []byte{1}); err != nil {
				return l, err
			}
		}
		nr := tx.bucket(bucketNewRefs)
		var seq [8]byte
		for _, k := range w.newRefs {
			binary.BigEndian.PutUint64(seq[:], l.next)
			if err := nr.Put(seq[:], []byte(k)); err != nil {
				return l, fmt.Errorf("blob ref %s: %w", k, err)
			}
			l.next++
			l.n++
		}
	}
	if l.n > 0 && (l.n >= foldRefsAt || len(w.deletes) > 0) {
		if _, err := foldRefs(tx); err != nil {
			return l, fmt.Errorf("fold blob refs: %w", err)
		}
		l.n = 0
	}
	gc := tx.bucket(bucketBlobGC)
	for _, k := range w.collected {
		if err := gc.Delete([]byte(k)); err != nil {
			return l, fmt.Errorf("blob gc %s: %w", k, err)
		}
	}
	dmg := tx.bucket(bucketDamaged)
	for _, k := range w.damaged {
		if err := dmg.Put([]byte(k), []byte{}); err != nil {
			return l, fmt.Errorf("damaged blob %s: %w", k, err)
		}
	}
	for _, k := range w.repaired {
		if err := dmg.Delete([]byte(k)); err != nil {
			return l, fmt.Errorf("repaired blob %s: %w", k, err)
		}
	}
	return l, nil
}

// foldRefs counts the references of newrefs in blobrefs and empties it (marking the store's
// counts complete, metaBlobRefs); it returns how many it folded.
func foldRefs(tx kvTx) (int, error) {
	nr := tx.bucket(bucketNewRefs)
	refs := tx.bucket(bucketBlobRefs)
	get := getterOf(refs)
	var seqs [][]byte // at most foldRefsAt plus one commit's
	err := nr.ForEach(func(k, v []byte) error {
		seqs = append(seqs, append([]byte(nil), k...))
		_, err := addBlobRefVia(refs, get, string(v), 1)
		return err
	})
	if err != nil {
		return 0, err
	}
	for _, k := range seqs {
		if err := nr.Delete(k); err != nil {
			return 0, err
		}
	}
	meta := tx.bucket(bucketMeta)
	if err := meta.Delete([]byte(metaRefsPending)); err != nil {
		return 0, err
	}
	return len(seqs), meta.Put([]byte(metaBlobRefs), []byte{1})
}

// commitDeletes removes deleted batches, releasing their blob references; blobs left without
// a reference are recorded in blobgc and returned in w.released.
func commitDeletes(tx kvTx, w *writeSet) error {
	if len(w.deletes) == 0 {
		return nil
	}
	refs := tx.bucket(bucketBlobRefs)
	gc := tx.bucket(bucketBlobGC)
	pbk, sb, rb := tx.bucket(bucketPapers), tx.bucket(bucketSpecs), tx.bucket(bucketResults)
	plb, db := tx.bucket(bucketPlans), tx.bucket(bucketDOIs)
	cb, bb := tx.bucket(bucketChunks), tx.bucket(bucketBatches)
	meta := tx.bucket(bucketMeta)
	spec := &pb.PaperSpec{}
	for _, d := range w.deletes {
		if n := len(d.papers); n > 0 {
			if err := raiseMark(meta, metaNextPaper, slices.Max(d.papers)+1); err != nil {
				return fmt.Errorf("index mark: %w", err)
			}
		}
		if d.last {
			if err := raiseMark(meta, metaNextBatch, d.idx+1); err != nil {
				return fmt.Errorf("index mark: %w", err)
			}
		}
		for _, idx := range d.papers {
			k := key32(idx)
			if raw := sb.Get(k); raw != nil {
				if err := proto.Unmarshal(raw, spec); err == nil && spec.GetDoi() != "" {
					if doi, err := validate.NormalizeDOI(spec.GetDoi()); err == nil {
						if v := db.Get([]byte(doi)); len(v) == 4 && binary.BigEndian.Uint32(v) == idx {
							if err := db.Delete([]byte(doi)); err != nil {
								return err
							}
						}
					}
				}
			}
			for _, b := range []kvBucket{pbk, sb, rb, plb} {
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("delete paper %d: %w", idx, err)
				}
			}
		}
		for _, c := range d.chunks {
			if err := cb.Delete(chunkKey(d.idx, c)); err != nil {
				return fmt.Errorf("delete chunk: %w", err)
			}
		}
		if d.last {
			if err := bb.Delete(key32(d.idx)); err != nil {
				return fmt.Errorf("delete batch %d: %w", d.idx, err)
			}
		}
		for _, key := range d.blobs {
			n, err := addBlobRefCount(refs, key, -1)
			if err != nil {
				return fmt.Errorf("blob ref %s: %w", key, err)
			}
			if n == 0 {
				if err := gc.Put([]byte(key), nil); err != nil {
					return fmt.Errorf("blob gc %s: %w", key, err)
				}
				w.released = append(w.released, key)
			}
		}
	}
	return nil
}
