package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/input"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// chunkRecorder is a CoordinatorServiceClient that records the chunks appended to one open
// batch and, like the coordinator, refuses a chunk index it accepted with other papers.
type chunkRecorder struct {
	pb.CoordinatorServiceClient
	chunks map[int64][]*pb.PaperSpec
	sizes  []int // the size of every chunk offered, in order (refused ones too)
	sealed int64
}

func (c *chunkRecorder) AppendPapers(_ context.Context, r *pb.AppendPapersRequest, _ ...grpc.CallOption) (*pb.AppendPapersResponse, error) {
	c.sizes = append(c.sizes, len(r.GetPapers()))
	if old, ok := c.chunks[r.GetChunkIndex()]; ok {
		if len(old) != len(r.GetPapers()) || !proto.Equal(old[0], r.GetPapers()[0]) {
			return nil, status.Errorf(codes.AlreadyExists, "chunk %d was accepted with different papers", r.GetChunkIndex())
		}
		return &pb.AppendPapersResponse{}, nil
	}
	c.chunks[r.GetChunkIndex()] = r.GetPapers()
	return &pb.AppendPapersResponse{}, nil
}

func (c *chunkRecorder) SealBatch(_ context.Context, r *pb.SealBatchRequest, _ ...grpc.CallOption) (*pb.SealBatchResponse, error) {
	c.sealed = r.GetChunkCount()
	return &pb.SealBatchResponse{}, nil
}

func (c *chunkRecorder) papers() int {
	n := 0
	for i := int64(0); i < c.sealed; i++ {
		n += len(c.chunks[i])
	}
	return n
}

func listInput(t *testing.T, n int) inputSet {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "https://example.org/%d.pdf\n", i)
	}
	return textInput(t, b.String())
}

// textInput is the input set of one list file holding text.
func textInput(t *testing.T, text string) inputSet {
	t.Helper()
	name := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := newInputSet([]string{name}, input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// The first chunk is small, so that the coordinator leases the first papers once 64 of them
// are parsed and stored, not the whole first 5,000 (before, a 1,000-paper list went in one
// chunk: no download started before all of it was parsed and committed); the next ones grow
// four times a chunk up to full chunks, so that each is stored before the papers before it
// are downloaded (before, the second chunk held 5,000 papers: after the first 64 papers no
// paper was leased until the CLI had parsed and the coordinator applied and committed 5,000).
func TestSubmitterChunksGrow(t *testing.T) {
	for _, tc := range []struct {
		papers int
		want   []int
	}{
		{50, []int{50}},
		{6000, []int{64, 256, 1024, 4096, 560}},
		{12000, []int{64, 256, 1024, 4096, 5000, 1560}},
	} {
		c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
		s := &submitter{client: c, callTimeout: time.Minute}
		n, err := s.fill(t.Context(), "b", listInput(t, tc.papers), nil)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(c.sizes) != fmt.Sprint(tc.want) {
			t.Errorf("%d papers: chunks of %v papers, want %v", tc.papers, c.sizes, tc.want)
		}
		if n != int64(tc.papers) || c.sealed != int64(len(tc.want)) || c.papers() != tc.papers {
			t.Errorf("%d papers: filled %d, sealed with %d chunks holding %d papers", tc.papers, n, c.sealed, c.papers())
		}
	}
}

// A batch left open by the version before (a first chunk of 64, then chunks of 5,000) refuses
// this version's second chunk: it is filled again in that version's chunks and sealed.
func TestSubmitterResumesTheSmallFirstChunkLayout(t *testing.T) {
	in := listInput(t, 6000)
	c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
	old := &submitter{client: c, callTimeout: time.Minute}
	if _, err := old.fillChunks(t.Context(), "b", in, nil, smallFirstChunk, false); err != nil {
		t.Fatal(err)
	}
	c.sizes, c.sealed = nil, 0
	s := &submitter{client: c, callTimeout: time.Minute}
	n, err := s.fill(t.Context(), "b", in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.sizes) != fmt.Sprint([]int{64, 256, 64, 5000, 936}) || n != 6000 || c.sealed != 3 || c.papers() != 6000 {
		t.Fatalf("chunks offered %v, filled %d, sealed with %d chunks holding %d papers", c.sizes, n, c.sealed, c.papers())
	}
}

// A batch left open by an earlier version (its first chunk held the first 1,000 papers)
// refuses the small first chunk: it is filled again in the earlier chunks and sealed.
func TestSubmitterResumesAnEarlierChunking(t *testing.T) {
	in := listInput(t, 1000)
	c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
	// The earlier version's first chunk: every paper.
	old := &submitter{client: c, callTimeout: time.Minute}
	if _, err := old.fillChunks(t.Context(), "b", in, nil, fullChunks, false); err != nil {
		t.Fatal(err)
	}
	c.sizes, c.sealed = nil, 0
	s := &submitter{client: c, callTimeout: time.Minute}
	n, err := s.fill(t.Context(), "b", in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.sizes) != fmt.Sprint([]int{firstChunkPapers, firstChunkPapers, 1000}) || n != 1000 || c.sealed != 1 || c.papers() != 1000 {
		t.Fatalf("chunks offered %v, filled %d, sealed with %d chunks holding %d papers", c.sizes, n, c.sealed, c.papers())
	}
}

// A batch filled again in an earlier version's chunks still reports every malformed entry once:
// the first pass stopped at its first chunk (before, the entries after the 65th paper were
// never reported).
func TestSubmitterResumeReportsEveryMalformedEntry(t *testing.T) {
	var b strings.Builder
	for i := range 300 {
		fmt.Fprintf(&b, "https://example.org/%d.pdf\nnot a paper %d\n", i, i)
	}
	in := textInput(t, b.String())
	c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
	old := &submitter{client: c, callTimeout: time.Minute}
	if _, err := old.fillChunks(t.Context(), "b", in, nil, fullChunks, false); err != nil {
		t.Fatal(err)
	}
	s := &submitter{client: c, callTimeout: time.Minute}
	skipped := map[string]int{}
	n, err := s.fill(t.Context(), "b", in, func(err error) { skipped[err.Error()]++ })
	if err != nil || n != 300 {
		t.Fatalf("filled %d, %v", n, err)
	}
	if len(skipped) != 300 {
		t.Errorf("%d malformed entries reported, want 300", len(skipped))
	}
	for e, k := range skipped {
		if k != 1 {
			t.Errorf("%q reported %d times", e, k)
		}
	}
}

// get's submission takes the papers its scan read (keptPapers): the batch whose id is their
// digest holds exactly them, even when the input file changed in between (before, the
// submission read the file again: 1 paper here, under the id of 6,000 others).
func TestSubmitterTakesTheScannedPapers(t *testing.T) {
	in := listInput(t, 6000)
	in.kept = &keptPapers{}
	if _, err := in.scan(t.Context(), func(err error) { t.Errorf("scan: %v", err) }); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.names[0], []byte("https://example.org/other.pdf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
	s := &submitter{client: c, callTimeout: time.Minute}
	n, err := s.fill(t.Context(), "b", in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6000 || c.papers() != 6000 || c.chunks[0][0].GetUrls()[0] != "https://example.org/0.pdf" || c.chunks[4][559].GetUrls()[0] != "https://example.org/5999.pdf" {
		t.Fatalf("filled %d, sealed %d chunks holding %d papers", n, c.sealed, c.papers())
	}
}

// Inputs beyond keptPapers' bounds, and malformed entries to be reported again, are read again.
func TestSubmitterReadsAgainBeyondTheKeptPapers(t *testing.T) {
	t.Run("bound", func(t *testing.T) {
		in := listInput(t, maxKeptPapers+1)
		in.kept = &keptPapers{}
		res, err := in.scan(t.Context(), func(err error) { t.Errorf("scan: %v", err) })
		if err != nil || res.papers != maxKeptPapers+1 {
			t.Fatalf("scan: %d papers, %v", res.papers, err)
		}
		if in.kept.complete || in.kept.specs != nil {
			t.Fatalf("kept %d papers of %d (complete %v)", len(in.kept.specs), maxKeptPapers+1, in.kept.complete)
		}
		c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
		s := &submitter{client: c, callTimeout: time.Minute}
		if n, err := s.fill(t.Context(), "b", in, nil); err != nil || n != maxKeptPapers+1 || c.papers() != maxKeptPapers+1 {
			t.Fatalf("filled %d (%d submitted), %v", n, c.papers(), err)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		// Long URLs (near validate.MaxURLBytes): the bytes bound is passed long before the
		// papers bound.
		long := strings.Repeat("a", validate.MaxURLBytes-64)
		n := maxKeptBytes/validate.MaxURLBytes + 200
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "https://example.org/%s/%d.pdf\n", long, i)
		}
		in := textInput(t, b.String())
		in.kept = &keptPapers{}
		res, err := in.scan(t.Context(), func(err error) { t.Errorf("scan: %v", err) })
		if err != nil || res.papers != int64(n) {
			t.Fatalf("scan: %d papers, %v", res.papers, err)
		}
		if in.kept.complete || in.kept.specs != nil {
			t.Fatalf("kept %d papers of %d, %d MiB (complete %v)", len(in.kept.specs), n, n*validate.MaxURLBytes>>20, in.kept.complete)
		}
		c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
		s := &submitter{client: c, callTimeout: time.Minute}
		if got, err := s.fill(t.Context(), "b", in, nil); err != nil || got != int64(n) || c.papers() != n {
			t.Fatalf("filled %d (%d submitted), %v", got, c.papers(), err)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		in := textInput(t, "https://example.org/1.pdf\nnot a paper\nhttps://example.org/2.pdf\n")
		in.kept = &keptPapers{}
		if _, err := in.scan(t.Context(), func(error) {}); err != nil || !in.kept.complete || len(in.kept.specs) != 2 {
			t.Fatalf("scan: %v, kept %+v", err, in.kept)
		}
		c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
		s := &submitter{client: c, callTimeout: time.Minute}
		skipped := 0
		if n, err := s.fill(t.Context(), "b", in, func(error) { skipped++ }); err != nil || n != 2 || skipped != 1 {
			t.Fatalf("filled %d, %d malformed entries reported (want 1), %v", n, skipped, err)
		}
	})
	t.Run("malformed, not reported", func(t *testing.T) {
		in := textInput(t, "https://example.org/1.pdf\nnot a paper\nhttps://example.org/2.pdf\n")
		in.kept = &keptPapers{}
		if _, err := in.scan(t.Context(), func(error) {}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(in.names[0], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		c := &chunkRecorder{chunks: map[int64][]*pb.PaperSpec{}}
		s := &submitter{client: c, callTimeout: time.Minute}
		if n, err := s.fill(t.Context(), "b", in, nil); err != nil || n != 2 || c.papers() != 2 {
			t.Fatalf("filled %d (%d submitted), %v; want the 2 papers the scan kept", n, c.papers(), err)
		}
		if in.kept.specs != nil {
			t.Error("the kept papers outlive the fill")
		}
	})
}
