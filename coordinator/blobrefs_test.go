package coordinator

import (
	"encoding/binary"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// blobCounts returns the reference count of every blob as the store holds it: blobrefs plus
// the entries of newrefs not folded yet; and how many of those there are.
func blobCounts(t *testing.T, s *store) (map[string]int64, int) {
	t.Helper()
	tx, end, err := s.kv.view()
	if err != nil {
		t.Fatal(err)
	}
	defer end()
	counts := map[string]int64{}
	err = tx.bucket(bucketBlobRefs).ForEach(func(k, v []byte) error {
		counts[string(k)] = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pending := 0
	err = tx.bucket(bucketNewRefs).ForEach(func(_, v []byte) error {
		counts[string(v)]++
		pending++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return counts, pending
}

func metaHas(t *testing.T, s *store, key string) bool {
	t.Helper()
	tx, end, err := s.kv.view()
	if err != nil {
		t.Fatal(err)
	}
	defer end()
	return tx.bucket(bucketMeta).Get([]byte(key)) != nil
}

func openTestStore(t *testing.T, dir string) *store {
	t.Helper()
	s, err := openStore(dir, time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBlobRefsPendingFoldAndReopen checks that references appended to newrefs count as
// references: across folds (at foldRefsAt entries) and a reopen after a crash (which folds
// what is left), the counts always equal the SUCCEEDED papers per blob, newrefs stays
// bounded, and the meta bucket marks the counts complete exactly when nothing is pending.
func TestBlobRefsPendingFoldAndReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	want := map[string]int64{}
	n := 0
	for commit := 0; n < foldRefsAt*2+100; commit++ {
		var w writeSet
		for j := 0; j < 1+commit%13; j++ {
			k := refKey(n % 3000) // some blobs referred to by several papers
			w.newRefs = append(w.newRefs, k)
			want[k]++
			n++
		}
		if err := s.commit(&w); err != nil {
			t.Fatal(err)
		}
		got, pending := blobCounts(t, s)
		if !maps.Equal(got, want) {
			t.Fatalf("commit %d: counts differ from the references (%d blobs, want %d)", commit, len(got), len(want))
		}
		if pending >= foldRefsAt {
			t.Fatalf("commit %d: %d references pending, fold at %d", commit, pending, foldRefsAt)
		}
		if metaHas(t, s, metaBlobRefs) == (pending > 0) || metaHas(t, s, metaRefsPending) != (pending > 0) {
			t.Fatalf("commit %d: %d pending, markers complete=%v pending=%v", commit, pending,
				metaHas(t, s, metaBlobRefs), metaHas(t, s, metaRefsPending))
		}
	}
	if _, pending := blobCounts(t, s); pending == 0 {
		t.Fatal("test needs references pending at the reopen")
	}
	// As a crash leaves it: the last commit written, no fold at close.
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir)
	defer s.close()
	got, pending := blobCounts(t, s)
	if pending != 0 || !maps.Equal(got, want) || !metaHas(t, s, metaBlobRefs) || metaHas(t, s, metaRefsPending) {
		t.Fatalf("after reopen: %d pending, counts equal %v, complete=%v pending marker=%v",
			pending, maps.Equal(got, want), metaHas(t, s, metaBlobRefs), metaHas(t, s, metaRefsPending))
	}
}

// TestDeleteCountsPendingRefs checks that a deletion sees the references still pending: a
// blob of two SUCCEEDED papers, both counted in newrefs only, is released by the second
// deletion, not the first (and a reference added by the deleting commit itself counts).
func TestDeleteCountsPendingRefs(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.close()
	k, other := refKey(1), refKey(2)
	if err := s.commit(&writeSet{newRefs: []string{k, k, other}}); err != nil {
		t.Fatal(err)
	}
	del := func(paper uint32, refs ...string) []string {
		t.Helper()
		w := &writeSet{newRefs: refs, deletes: []batchDelete{{idx: 0, papers: []uint32{paper}, blobs: []string{k}}}}
		if err := s.commit(w); err != nil {
			t.Fatal(err)
		}
		return w.released
	}
	if r := del(1); len(r) != 0 {
		t.Fatalf("first deletion released %v; another paper refers to it", r)
	}
	if r := del(2, k); len(r) != 0 {
		t.Fatalf("deletion released %v; a paper of the same commit refers to it", r)
	}
	if r := del(3); !slices.Equal(r, []string{k}) {
		t.Fatalf("last deletion released %v, want [%s]", r, k)
	}
	if got, _ := blobCounts(t, s); len(got) != 1 || got[other] != 1 {
		t.Fatalf("counts after deletions %v, want only %s: 1", got, other)
	}
}

// TestOpenStoreOfEarlierVersions opens stores as earlier versions left them: one with
// complete counts in blobrefs and no newrefs bucket, one from before blob reference counting
// (no blobrefs bucket: its SUCCEEDED papers are counted when opened). Both then count new
// references and release a blob at its last reference only.
func TestOpenStoreOfEarlierVersions(t *testing.T) {
	shared := refKey(7)
	for _, counted := range []bool{true, false} {
		t.Run(fmt.Sprintf("counted=%v", counted), func(t *testing.T) {
			dir := t.TempDir()
			db, err := bolt.Open(filepath.Join(dir, "coordinator.db"), 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				for _, b := range []string{bucketMeta, bucketPapers, bucketResults} {
					if _, err := tx.CreateBucket([]byte(b)); err != nil {
						return err
					}
				}
				rec := storedPaper{state: stateSucceeded, blobKey: shared, sha256: shared[10:74]}
				if err := tx.Bucket([]byte(bucketPapers)).Put(key32(0), rec.marshalFixed(nil)); err != nil {
					return err
				}
				if err := tx.Bucket([]byte(bucketResults)).Put(key32(0), rec.marshalResults(nil)); err != nil {
					return err
				}
				if !counted {
					return nil
				}
				refs, err := tx.CreateBucket([]byte(bucketBlobRefs))
				if err != nil {
					return err
				}
				var one [8]byte
				binary.BigEndian.PutUint64(one[:], 1)
				if err := refs.Put([]byte(shared), one[:]); err != nil {
					return err
				}
				return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaBlobRefs), []byte{1})
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			s := openTestStore(t, dir)
			defer s.close()
			if got, _ := blobCounts(t, s); len(got) != 1 || got[shared] != 1 {
				t.Fatalf("counts after open %v, want %s: 1", got, shared)
			}
			if err := s.commit(&writeSet{newRefs: []string{shared}}); err != nil {
				t.Fatal(err)
			}
			for i, want := range []int{0, 1} {
				w := &writeSet{deletes: []batchDelete{{idx: 0, papers: []uint32{uint32(i)}, blobs: []string{shared}}}}
				if err := s.commit(w); err != nil {
					t.Fatal(err)
				}
				if len(w.released) != want {
					t.Fatalf("deletion %d released %v, want %d blobs", i, w.released, want)
				}
			}
		})
	}
}

// TestCloseFoldsPendingRefs checks that a store closed normally leaves no reference pending:
// an earlier version (which knows only blobrefs and metaBlobRefs, and counts every SUCCEEDED
// paper again on top of blobrefs when metaBlobRefs is missing) then opens it with exact
// counts, not with every blob counted twice.
func TestCloseFoldsPendingRefs(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	k, other := refKey(1), refKey(2)
	if err := s.commit(&writeSet{newRefs: []string{k, k, other}}); err != nil {
		t.Fatal(err)
	}
	if _, pending := blobCounts(t, s); pending == 0 {
		t.Fatal("test needs references pending at the close")
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	// Read the file as an earlier version would.
	db, err := bolt.Open(filepath.Join(dir, "coordinator.db"), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		if meta.Get([]byte(metaBlobRefs)) == nil || meta.Get([]byte(metaRefsPending)) != nil {
			t.Errorf("after close: complete=%v pending marker=%v, want complete counts",
				meta.Get([]byte(metaBlobRefs)) != nil, meta.Get([]byte(metaRefsPending)) != nil)
		}
		if n := tx.Bucket([]byte(bucketNewRefs)).Stats().KeyN; n != 0 {
			t.Errorf("after close: %d references left in newrefs", n)
		}
		got := map[string]uint64{}
		_ = tx.Bucket([]byte(bucketBlobRefs)).ForEach(func(k, v []byte) error {
			got[string(k)] = binary.BigEndian.Uint64(v)
			return nil
		})
		if len(got) != 2 || got[k] != 2 || got[other] != 1 {
			t.Errorf("blobrefs after close %v, want %s: 2, %s: 1", got, k, other)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
