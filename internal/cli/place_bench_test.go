package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// BenchmarkPlaceNew places new 20 KiB papers from a local blob store into the output folder,
// one at a time, as get's placers do (PlaceNew: copy, SHA-256, link into place; the folders
// held as get holds them). An op is one paper, each under a new name in one folder (1,000
// distinct blobs, reused).
func BenchmarkPlaceNew(b *testing.B) {
	root := b.TempDir()
	out, blobs := filepath.Join(root, "out"), filepath.Join(root, "blobs")
	const distinct = 1000
	type blob struct {
		key, sha string
	}
	stored := make([]blob, distinct)
	content := make([]byte, 20<<10)
	for i := range stored {
		copy(content, fmt.Sprintf("%%PDF-1.7 paper %d\n", i))
		sum := sha256.Sum256(content)
		sha := hex.EncodeToString(sum[:])
		key := "sha256/" + sha[:2] + "/" + sha + ".pdf"
		if err := os.MkdirAll(filepath.Join(blobs, "sha256", sha[:2]), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(blobs, filepath.FromSlash(key)), content, 0o644); err != nil {
			b.Fatal(err)
		}
		stored[i] = blob{key, sha}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		b.Fatal(err)
	}
	m := &materializer{out: out, bucketURL: "file://" + filepath.ToSlash(blobs)}
	m.holdDirs()
	defer m.release()
	ctx := context.Background()
	b.SetBytes(int64(len(content)))
	for i := 0; b.Loop(); i++ {
		s := stored[i%distinct]
		p := &pb.Paper{Spec: &pb.PaperSpec{PaperId: fmt.Sprintf("p%d", i)}, State: pb.PaperState_PAPER_STATE_SUCCEEDED,
			BlobKey: s.key, Sha256: s.sha, Size: int64(len(content))}
		if _, _, err := m.PlaceNew(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}
