package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"
)

// refKey is the content-addressed blob key of content i (random over the key space, as real
// ones are).
func refKey(i int) string {
	s := sha256.Sum256([]byte(fmt.Sprint(i)))
	return "sha256/" + hex.EncodeToString(s[:1]) + "/" + hex.EncodeToString(s[:]) + ".pdf"
}

// BenchmarkStoreCommitPages measures what bbolt writes per commit of the shape `paperfetch
// get` gives the loop: a batch of 10,000 papers, then commits that each lease 8 papers and
// complete 8 leased earlier (each completion with its results and a blob reference). It reports
// the pages written per commit and per paper (each page a block request on an unmerged
// write-back), and the time per commit with fdatasync on.
func BenchmarkStoreCommitPages(b *testing.B) {
	const papers, perCommit, behind = 10_000, 8, 64
	for i := 0; i < b.N; i++ {
		s, err := openStore(b.TempDir(), time.Second, false)
		if err != nil {
			b.Fatal(err)
		}
		for first := 0; first < papers; first += 1000 {
			var w writeSet
			for idx := first; idx < first+1000; idx++ {
				rec := storedPaper{idHash: uint64(idx) * 0x9E3779B97F4A7C15, createdAt: 1, batch: 0, nurls: 1, state: stateQueued}
				w.newPapers = append(w.newPapers, newPaperWrite{idx: uint32(idx), rec: rec.marshalFixed(nil), spec: make([]byte, 60)})
			}
			if err := s.commit(&w); err != nil {
				b.Fatal(err)
			}
		}
		before := s.db.Stats().TxStats
		start := time.Now()
		commits := 0
		for g := 0; g < papers+behind; g += perCommit {
			var w writeSet
			for idx := g; idx < min(g+perCommit, papers); idx++ {
				w.dirty = append(w.dirty, dirtyWrite{idx: uint32(idx), hot: memPaper{state: stateDownloading, attempts: 1, nurls: 1}})
			}
			for idx := max(g-behind, 0); idx < min(g-behind+perCommit, papers); idx++ {
				key := refKey(idx)
				w.dirty = append(w.dirty, dirtyWrite{idx: uint32(idx), hot: memPaper{state: stateSucceeded, attempts: 1, nurls: 1, at: 5},
					cold: &coldUpdate{success: true, size: 20480, sha256: key[10:74], blobKey: key,
						finalURL: "http://127.0.0.1:34389/pdf/12345?size=20480", ctype: "application/pdf"}})
				w.newRefs = append(w.newRefs, key)
			}
			if err := s.commit(&w); err != nil {
				b.Fatal(err)
			}
			commits++
		}
		elapsed := time.Since(start)
		after := s.db.Stats().TxStats
		pages := float64(after.GetWrite() - before.GetWrite())
		b.ReportMetric(float64(elapsed.Microseconds())/float64(commits), "µs/commit")
		b.ReportMetric(pages/float64(commits), "pages/commit")
		b.ReportMetric(pages/papers, "pages/paper")
		if err := s.close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(0, "ns/op")
}
