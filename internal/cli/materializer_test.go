package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/reflink"
)

// Where the file systems cannot clone, the first failed clone is remembered (the next copies
// do not try again: one failed ioctl per file saved), and every copy is still whole and verified.
// Where they can, every placement clones and nothing is remembered.
func TestWriteVerifiedRemembersNoClone(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("%PDF-1.7 clone or copy\n"), 5000)
	sum := sha256.Sum256(content)
	src := filepath.Join(dir, "blob")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	probe := func() error {
		in, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := os.Create(filepath.Join(dir, "probe"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		return reflink.Clone(out, in)
	}
	perr := probe()
	unsupported := errors.Is(perr, reflink.ErrUnsupported)
	if perr != nil && !unsupported {
		t.Fatalf("probe clone: %v", perr)
	}
	m := &materializer{}
	for i := range 3 {
		in, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, fmt.Sprintf("out%d.pdf", i))
		err = m.writeVerified(dst, in, hex.EncodeToString(sum[:]), -1)
		_ = in.Close()
		if err != nil {
			t.Fatalf("place %d: %v", i, err)
		}
		if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("place %d: %d bytes, %v; want the blob's %d", i, len(got), err, len(content))
		}
		if m.noClone.Load() != unsupported {
			t.Fatalf("place %d: noClone %v where the file system's clone says %v", i, m.noClone.Load(), perr)
		}
	}
}

// PlaceNew without --link copies a new paper's blob to its name, through the held folders
// (holdDirs) or by path: a file already there is replaced by the verified copy, a damaged blob
// (size or SHA-256) places nothing and is removed, and a cache hit whose file is in place and
// verified is kept as it is (the rerun's skip).
func TestPlaceNewCopies(t *testing.T) {
	for _, held := range []bool{true, false} {
		t.Run(fmt.Sprintf("held=%v", held), func(t *testing.T) {
			m, out, blobs := newTestMaterializer(t, "ab")
			if held {
				m.holdDirs()
				defer m.release()
				if m.outDir == nil || m.blobDir == nil {
					t.Fatal("holdDirs held no folder")
				}
			}
			blob := func(key string, content []byte) *pb.Paper {
				t.Helper()
				if err := os.WriteFile(filepath.Join(blobs, filepath.FromSlash(key)), content, 0o644); err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(content)
				return &pb.Paper{Spec: &pb.PaperSpec{PaperId: strings.TrimSuffix(path.Base(key), ".pdf")}, State: pb.PaperState_PAPER_STATE_SUCCEEDED,
					BlobKey: key, Sha256: hex.EncodeToString(sum[:]), Size: int64(len(content))}
			}
			ctx := context.Background()
			content := bytes.Repeat([]byte("%PDF-1.7 new paper\n"), 3000)

			fresh := blob("sha256/ab/fresh.pdf", content)
			got, already, err := m.PlaceNew(ctx, fresh)
			if err != nil || already || got != filepath.Join(out, "fresh.pdf") {
				t.Fatalf("PlaceNew = %q, %v, %v", got, already, err)
			}
			if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, content) {
				t.Fatalf("placed %d bytes, %v; want the blob's %d", len(b), err, len(content))
			}

			stale := blob("sha256/ab/stale.pdf", content)
			if err := os.WriteFile(filepath.Join(out, "stale.pdf"), []byte("an older file"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, _, err := m.PlaceNew(ctx, stale); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(out, "stale.pdf")); err != nil || !bytes.Equal(b, content) {
				t.Fatalf("the file already there was not replaced: %d bytes, %v", len(b), err)
			}

			for name, mangle := range map[string]func([]byte) []byte{
				"flipped": func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 1; return c },
				"longer":  func(b []byte) []byte { return append(bytes.Clone(b), 'x') },
			} {
				bad := blob("sha256/ab/"+name+".pdf", content)
				if err := os.WriteFile(filepath.Join(blobs, "sha256", "ab", name+".pdf"), mangle(content), 0o644); err != nil {
					t.Fatal(err)
				}
				_, _, err := m.PlaceNew(ctx, bad)
				var ce *corruptBlobError
				if !errors.As(err, &ce) {
					t.Fatalf("%s blob: PlaceNew = %v, want a corruptBlobError", name, err)
				}
				if _, err := os.Stat(filepath.Join(out, name+".pdf")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s blob: a file was placed (%v)", name, err)
				}
				if _, err := os.Stat(filepath.Join(blobs, "sha256", "ab", name+".pdf")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s blob: not removed (%v)", name, err)
				}
			}

			hit := blob("sha256/ab/hit.pdf", content)
			hit.Cached = true
			if err := os.WriteFile(filepath.Join(out, "hit.pdf"), content, 0o644); err != nil {
				t.Fatal(err)
			}
			before, err := os.Stat(filepath.Join(out, "hit.pdf"))
			if err != nil {
				t.Fatal(err)
			}
			if _, already, err := m.PlaceNew(ctx, hit); err != nil || !already {
				t.Fatalf("cache hit with its file in place: already %v, %v", already, err)
			}
			if after, err := os.Stat(filepath.Join(out, "hit.pdf")); err != nil || !os.SameFile(before, after) {
				t.Fatalf("the verified file of a cache hit was replaced (%v)", err)
			}
			entries, err := os.ReadDir(out)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if want := []string{"fresh.pdf", "hit.pdf", "stale.pdf"}; !slices.Equal(names, want) {
				t.Fatalf("output folder holds %q, want %q", names, want)
			}
		})
	}
}

// With the blob folder held, localBlob maps exactly the keys blobstore.LocalPath maps, to the
// same file.
func TestHeldLocalBlobIsLocalPath(t *testing.T) {
	blobs := t.TempDir()
	bucketURL := "file://" + filepath.ToSlash(blobs)
	m := &materializer{out: t.TempDir(), bucketURL: bucketURL}
	m.holdDirs()
	defer m.release()
	if m.blobDir == nil {
		t.Fatal("holdDirs held no blob folder")
	}
	keys := []string{"sha256/ab/" + strings.Repeat("ab", 32) + ".pdf", "a", "a/b", "A-b_c.d/e", "", "/a", "a/", "a//b", "./a", "a/./b",
		"a/../b", "..", ".", "a/b.pdf.attrs", "a/b c", "a\\b", "é", "a/.hidden", "..a", "a..", "a/%2e%2e"}
	for _, k := range keys {
		want, wantOK := blobstore.LocalPath(bucketURL, k)
		if got, ok := m.localBlob(&pb.Paper{BlobKey: k}); got != want || ok != wantOK {
			t.Errorf("localBlob(%q) = %q, %v; blobstore.LocalPath says %q, %v", k, got, ok, want, wantOK)
		}
	}
}

// A small blob is placed through placeSmall (one read, one write, raw descriptors) where the
// folders are held and the file systems cannot clone: the placed file holds exactly the blob, a
// file already there is replaced, a blob whose size or SHA-256 is not the recorded one (a bit
// flipped, a byte more, a byte less) places nothing and is removed, and a missing blob is
// os.ErrNotExist (PlaceNew then fetches it with ReadPaper). A blob of a copy buffer or more, or
// without a SHA-256, is not placeSmall's.
func TestPlaceSmallChecksTheBlob(t *testing.T) {
	m, out, blobs := newTestMaterializer(t, "cd")
	m.holdDirs()
	defer m.release()
	m.noClone.Store(true) // as after the first copy on ext4
	ctx := context.Background()
	blob := func(name string, content []byte) (*pb.Paper, string) {
		t.Helper()
		key := "sha256/cd/" + name + ".pdf"
		if err := os.WriteFile(filepath.Join(blobs, filepath.FromSlash(key)), content, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(content)
		p := &pb.Paper{Spec: &pb.PaperSpec{PaperId: name}, State: pb.PaperState_PAPER_STATE_SUCCEEDED,
			BlobKey: key, Sha256: hex.EncodeToString(sum[:]), Size: int64(len(content))}
		src, ok := m.localBlob(p)
		if !ok {
			t.Fatal("no local blob path")
		}
		return p, src
	}
	place := func(p *pb.Paper, src string) error {
		t.Helper()
		done, err := m.placeSmall(ctx, src, m.target(p), p)
		if !done {
			t.Fatalf("%s: placeSmall did not apply", p.GetSpec().GetPaperId())
		}
		return err
	}
	for _, size := range []int{0, 1, 20 << 10, 64 << 10, copyBufSize - 1} {
		content := bytes.Repeat([]byte{'%'}, size)
		if size > 0 {
			copy(content, fmt.Sprintf("%%PDF-1.7 %d\n", size))
		}
		name := fmt.Sprintf("fresh%d", size)
		p, src := blob(name, content)
		if size == 1 { // a file already there is replaced
			if err := os.WriteFile(filepath.Join(out, name+".pdf"), []byte("an older file"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := place(p, src); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b, err := os.ReadFile(filepath.Join(out, name+".pdf")); err != nil || !bytes.Equal(b, content) {
			t.Fatalf("%s: placed %d bytes, %v; want the blob's %d", name, len(b), err, len(content))
		}
	}
	content := bytes.Repeat([]byte("%PDF-1.7 small paper\n"), 1000)
	for name, mangle := range map[string]func([]byte) []byte{
		"flipped": func(b []byte) []byte { c := bytes.Clone(b); c[len(c)-1] ^= 1; return c },
		"longer":  func(b []byte) []byte { return append(bytes.Clone(b), 'x') },
		"shorter": func(b []byte) []byte { return bytes.Clone(b[:len(b)-1]) },
	} {
		p, src := blob(name, content)
		if err := os.WriteFile(src, mangle(content), 0o644); err != nil {
			t.Fatal(err)
		}
		var ce *corruptBlobError
		if err := place(p, src); !errors.As(err, &ce) {
			t.Fatalf("%s blob: placeSmall = %v, want a corruptBlobError", name, err)
		}
		if _, err := os.Stat(filepath.Join(out, name+".pdf")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s blob: a file was placed (%v)", name, err)
		}
		if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s blob: not removed (%v)", name, err)
		}
	}
	p, src := blob("missing", content)
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	if err := place(p, src); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing blob: placeSmall = %v, want os.ErrNotExist", err)
	}
	big, bigSrc := blob("big", bytes.Repeat([]byte{'x'}, copyBufSize))
	noSHA, noSHASrc := blob("nosha", content)
	noSHA.Sha256 = ""
	for _, c := range []struct {
		p   *pb.Paper
		src string
	}{{big, bigSrc}, {noSHA, noSHASrc}} {
		if done, err := m.placeSmall(ctx, c.src, m.target(c.p), c.p); done {
			t.Fatalf("%s: placeSmall applied (%v)", c.p.GetSpec().GetPaperId(), err)
		}
	}
	var names []string
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"fresh0.pdf", "fresh1.pdf", "fresh20480.pdf", "fresh65536.pdf", fmt.Sprintf("fresh%d.pdf", copyBufSize-1)}; !slices.Equal(names, want) {
		t.Fatalf("output folder holds %q, want %q", names, want)
	}
}

// A blob of copyBufSize or more is copied through the copy buffers (bigCopyBufSize ones above
// copyBufSize): the placed file holds exactly the blob whatever its size against the buffer's,
// and a blob with its last byte flipped, or a byte more, places nothing and is removed.
func TestPlaceNewCopiesLargeBlobs(t *testing.T) {
	m, out, blobs := newTestMaterializer(t, "ef")
	m.holdDirs()
	defer m.release()
	ctx := context.Background()
	content := func(size int) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i*7 + i/251)
		}
		return b
	}
	blob := func(name string, c []byte) (*pb.Paper, string) {
		t.Helper()
		key := "sha256/ef/" + name + ".pdf"
		src := filepath.Join(blobs, filepath.FromSlash(key))
		if err := os.WriteFile(src, c, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(c)
		return &pb.Paper{Spec: &pb.PaperSpec{PaperId: name}, State: pb.PaperState_PAPER_STATE_SUCCEEDED,
			BlobKey: key, Sha256: hex.EncodeToString(sum[:]), Size: int64(len(c))}, src
	}
	for _, size := range []int{copyBufSize, copyBufSize + 1, bigCopyBufSize - 1, bigCopyBufSize, 3*bigCopyBufSize + 5} {
		c := content(size)
		name := fmt.Sprintf("large%d", size)
		p, _ := blob(name, c)
		if _, _, err := m.PlaceNew(ctx, p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b, err := os.ReadFile(filepath.Join(out, name+".pdf")); err != nil || !bytes.Equal(b, c) {
			t.Fatalf("%s: placed %d bytes, %v; want the blob's %d", name, len(b), err, len(c))
		}
	}
	for name, mangle := range map[string]func([]byte) []byte{
		"flipped": func(b []byte) []byte { c := bytes.Clone(b); c[len(c)-1] ^= 1; return c },
		"longer":  func(b []byte) []byte { return append(bytes.Clone(b), 'x') },
	} {
		c := content(2*bigCopyBufSize + 3)
		p, src := blob(name, c)
		if err := os.WriteFile(src, mangle(c), 0o644); err != nil {
			t.Fatal(err)
		}
		var ce *corruptBlobError
		if _, _, err := m.PlaceNew(ctx, p); !errors.As(err, &ce) {
			t.Fatalf("%s blob: PlaceNew = %v, want a corruptBlobError", name, err)
		}
		if _, err := os.Stat(filepath.Join(out, name+".pdf")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s blob: a file was placed (%v)", name, err)
		}
		if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s blob: not removed (%v)", name, err)
		}
	}
}

// newTestMaterializer makes an output folder and a local blob store holding the folder
// sha256/SHARD under a fresh temporary folder, and a materializer placing from one into the
// other (its folders not held yet).
func newTestMaterializer(t *testing.T, shard string) (m *materializer, out, blobs string) {
	t.Helper()
	root := t.TempDir()
	out, blobs = filepath.Join(root, "out"), filepath.Join(root, "blobs")
	for _, dir := range []string{filepath.Join(blobs, "sha256", shard), out} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &materializer{out: out, bucketURL: "file://" + filepath.ToSlash(blobs)}, out, blobs
}
