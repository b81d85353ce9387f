package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// materializer puts succeeded papers into the output folder as OUT/<FileName(id)>.pdf: a hard
// link to the blob file when the blob store is a local folder on the same file system, else a
// copy (of the local blob file, or streamed with ReadPaper and verified).
type materializer struct {
	out       string
	bucketURL string // "" when the blob store is not local
	client    pb.CoordinatorServiceClient
}

// Path returns where a paper's PDF goes.
func (m *materializer) Path(paperID string) string {
	return filepath.Join(m.out, FileName(paperID)+".pdf")
}

// PlaceNew is Place for a paper that just succeeded, whose file is most likely not in the
// output folder yet: it first tries a hard link under the final name (which appears whole or
// not at all, so neither a stat nor a temporary name is needed), then falls back to Place.
func (m *materializer) PlaceNew(ctx context.Context, p *pb.Paper) (string, bool, error) {
	if m.bucketURL != "" {
		if lp, ok := blobstore.LocalPath(m.bucketURL, p.GetBlobKey()); ok {
			target := m.Path(p.GetSpec().GetPaperId())
			if err := os.Link(lp, target); err == nil {
				return target, false, nil
			}
		}
	}
	return m.Place(ctx, p)
}

// Place makes sure the succeeded paper p is at Path(p's id), and returns the path and whether
// it was already there. A file already there with other content is replaced.
func (m *materializer) Place(ctx context.Context, p *pb.Paper) (string, bool, error) {
	target := m.Path(p.GetSpec().GetPaperId())
	var blobPath string
	if m.bucketURL != "" {
		if lp, ok := blobstore.LocalPath(m.bucketURL, p.GetBlobKey()); ok {
			blobPath = lp
		}
	}
	if st, err := os.Stat(target); err == nil && st.Mode().IsRegular() && st.Size() == p.GetSize() {
		if blobPath != "" {
			if bst, err := os.Stat(blobPath); err == nil && os.SameFile(st, bst) {
				return target, true, nil
			}
		}
		if sum, err := fileSHA256(target); err == nil && sum == p.GetSha256() {
			return target, true, nil
		}
	}
	if blobPath != "" {
		if err := linkOrCopy(blobPath, target, p.GetSha256()); err == nil {
			return target, false, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", false, err
		}
		// The blob file is missing locally: fall back to ReadPaper.
	}
	if err := m.pull(ctx, p, target); err != nil {
		return "", false, err
	}
	return target, false, nil
}

// linkOrCopy puts src at dst atomically: a hard link when possible, else a verified copy.
func linkOrCopy(src, dst, sha string) error {
	tmp := tempName(dst)
	if err := os.Link(src, tmp); err == nil {
		if err := os.Rename(tmp, dst); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("place %s: %w", dst, err)
		}
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open blob: %w", err)
	}
	defer in.Close()
	return writeVerified(dst, in, sha)
}

// pull streams a paper with ReadPaper into target, resuming from target's ".part" file.
func (m *materializer) pull(ctx context.Context, p *pb.Paper, target string) error {
	return readPaper(ctx, m.client, p.GetBatchId(), p.GetSpec().GetPaperId(), target, p.GetSha256())
}

// readPaper downloads one stored paper to target through ReadPaper. Bytes already in
// target+".part" (from an interrupted pull) are kept and the read resumes after them; the whole
// file's SHA-256 is checked before it is renamed into place.
func readPaper(ctx context.Context, client pb.CoordinatorServiceClient, batchID, paperID, target, wantSHA string) error {
	part := target + ".part"
	h := sha256.New()
	var offset int64
	if f, err := os.Open(part); err == nil {
		n, err := io.Copy(h, f)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", part, err)
		}
		offset = n
	}
	stream, err := client.ReadPaper(ctx, &pb.ReadPaperRequest{BatchId: batchID, PaperId: paperID, Offset: offset})
	if err != nil {
		return fmt.Errorf("read paper %s: %w", paperID, err)
	}
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", part, err)
	}
	defer f.Close()
	var size int64 = -1
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read paper %s: %w", paperID, err)
		}
		if msg.GetOffset() != offset {
			return fmt.Errorf("read paper %s: got offset %d, want %d", paperID, msg.GetOffset(), offset)
		}
		if wantSHA == "" {
			wantSHA = msg.GetSha256()
		}
		size = msg.GetSize()
		if _, err := f.Write(msg.GetData()); err != nil {
			return fmt.Errorf("write %s: %w", part, err)
		}
		h.Write(msg.GetData())
		offset += int64(len(msg.GetData()))
	}
	if size >= 0 && offset != size {
		return fmt.Errorf("read paper %s: stream ended at %d of %d bytes", paperID, offset, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); wantSHA != "" && got != strings.ToLower(wantSHA) {
		_ = f.Close()
		_ = os.Remove(part)
		return fmt.Errorf("read paper %s: sha256 %s, want %s (partial file removed; retry)", paperID, got, wantSHA)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", part, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", part, err)
	}
	if err := os.Rename(part, target); err != nil {
		return fmt.Errorf("place %s: %w", target, err)
	}
	return nil
}

// writeVerified copies r into a temporary file next to dst, checks its SHA-256 (unless sha is
// empty), syncs it and renames it to dst.
func writeVerified(dst string, r io.Reader, sha string) error {
	tmp := tempName(dst)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, sum), r); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); sha != "" && got != strings.ToLower(sha) {
		return fmt.Errorf("copy to %s: sha256 %s, want %s", dst, got, sha)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("place %s: %w", dst, err)
	}
	ok = true
	return nil
}

// tempName is a unique hidden temporary name next to dst.
func tempName(dst string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+"."+hex.EncodeToString(b[:])+".tmp")
}

// fileSHA256 hashes a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
