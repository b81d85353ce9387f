package coordinator

import (
	"testing"
	"time"
)

// A snapshot looks up the paper buckets once for all the papers it reads (a read-only bbolt
// transaction builds a new Bucket, with allocations, on every lookup): reading a paper's
// record costs bbolt's 4 allocations, not 10 as when every read looked the buckets up.
func TestSnapshotPaperReadsLookUpBucketsOnce(t *testing.T) {
	s, err := openStore(t.TempDir(), time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.close() }()
	const papers = 100
	var w writeSet
	for idx := range papers {
		rec := storedPaper{idHash: uint64(idx) + 1, createdAt: 1, nurls: 1, state: stateQueued}
		w.newPapers = append(w.newPapers, newPaperWrite{idx: uint32(idx), rec: rec.marshalFixed(nil)})
	}
	if err := s.commit(&w); err != nil {
		t.Fatal(err)
	}
	snap := newKVSnapshot(s.kv)
	defer snap.release()
	var rec storedPaper
	read := func() {
		for idx := range papers {
			if err := snap.paper(uint32(idx), &rec, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	read()
	if rec.idHash != papers {
		t.Fatalf("read idHash %d, want %d", rec.idHash, papers)
	}
	// 4 per paper are bbolt's own (a cursor and its stack per Get of the record and of its
	// results); looking the buckets up on every read made it 10.
	if n := testing.AllocsPerRun(20, read); n > 5*papers {
		t.Fatalf("reading %d papers through one snapshot: %.0f allocations, want at most %d", papers, n, 5*papers)
	}
}
