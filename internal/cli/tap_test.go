package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// tapFixture is a materializer with its folders held and its taps armed for batch "b".
type tapFixture struct {
	m          *materializer
	out, blobs string
}

func newTapFixture(t *testing.T, max int) *tapFixture {
	t.Helper()
	m, out, blobs := newTestMaterializer(t, "cd")
	m.holdDirs()
	m.taps = newOutTaps(max)
	m.taps.arm(m.outDir, "b")
	t.Cleanup(func() {
		m.taps.close()
		m.release()
	})
	return &tapFixture{m: m, out: out, blobs: blobs}
}

// paper stores c as the blob of paper id (key sha256/cd/ID.pdf) and returns the paper.
func (fx *tapFixture) paper(t *testing.T, id string, c []byte) *pb.Paper {
	t.Helper()
	key := "sha256/cd/" + id + ".pdf"
	if err := os.WriteFile(filepath.Join(fx.blobs, filepath.FromSlash(key)), c, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c)
	return &pb.Paper{BatchId: "b", Spec: &pb.PaperSpec{PaperId: id}, State: pb.PaperState_PAPER_STATE_SUCCEEDED,
		BlobKey: key, Sha256: hex.EncodeToString(sum[:]), Size: int64(len(c))}
}

// blobPath returns the blob file of p.
func (fx *tapFixture) blobPath(p *pb.Paper) string {
	return filepath.Join(fx.blobs, filepath.FromSlash(p.GetBlobKey()))
}

// write opens a copy for paper id and writes c to it.
func (fx *tapFixture) write(t *testing.T, id string, c []byte) *outTap {
	t.Helper()
	w := fx.m.taps.Open("b", id)
	if w == nil {
		t.Fatalf("no copy for %s", id)
	}
	for b := c; len(b) > 0; {
		n := min(len(b), 10_000)
		if _, err := w.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	return w.(*outTap)
}

// outNames lists the output folder's entries.
func (fx *tapFixture) outNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(fx.out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// copiesOpen returns how many of this process's descriptors name a file in the fixture's output
// folder: the output copies open (an unnamed one's link target is its folder's path followed by
// "/#inode (deleted)").
func (fx *tapFixture) copiesOpen(t *testing.T) int {
	t.Helper()
	return openIn(t, fx.out)
}

// openIn returns how many of this process's descriptors are files in dir (the copies' unnamed
// files show as "DIR/#INODE (deleted)").
func openIn(t *testing.T, dir string) int {
	t.Helper()
	return openWhere(t, func(target string) bool { return strings.HasPrefix(target, dir+string(filepath.Separator)) })
}

// openWhere returns how many of this process's descriptors name a file for which match holds
// (their /proc/self/fd link targets).
func openWhere(t *testing.T, match func(target string) bool) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && match(target) {
			n++
		}
	}
	return n
}

// PlaceNew links a paper's finished copy into place without reading its blob: with the blob
// damaged on disk first, the output file still holds the downloaded bytes and the blob is left
// alone (a read would have found it damaged and removed it). A copy finished with another
// digest or size, or not finished, is discarded and the paper placed from its blob (checked).
func TestPlaceNewUsesTheFinishedCopy(t *testing.T) {
	ctx := context.Background()
	content := bytes.Repeat([]byte("%PDF-1.7 downloaded once\n"), 20_000)
	t.Run("finished", func(t *testing.T) {
		fx := newTapFixture(t, maxOutTaps)
		p := fx.paper(t, "p1", content)
		damaged := bytes.Clone(content)
		damaged[len(damaged)/2] ^= 1
		if err := os.WriteFile(fx.blobPath(p), damaged, 0o644); err != nil {
			t.Fatal(err)
		}
		fx.write(t, "p1", content).Finish(p.GetSha256(), p.GetSize())
		path, had, err := fx.m.PlaceNew(ctx, p)
		if err != nil || had || path != filepath.Join(fx.out, "p1.pdf") {
			t.Fatalf("PlaceNew = %q, %v, %v", path, had, err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("placed %d bytes (%v), want the downloaded %d", len(got), err, len(content))
		}
		if got, err := os.ReadFile(fx.blobPath(p)); err != nil || !bytes.Equal(got, damaged) {
			t.Fatalf("the blob was read (%v): PlaceNew did not use the copy", err)
		}
		if n := fx.copiesOpen(t); n != 0 {
			t.Fatalf("%d copies open after the placement", n)
		}
	})
	other := sha256.Sum256([]byte("other"))
	for name, finish := range map[string]func(w *outTap, p *pb.Paper){
		"other digest": func(w *outTap, p *pb.Paper) { w.Finish(hex.EncodeToString(other[:]), p.GetSize()) },
		"other size":   func(w *outTap, p *pb.Paper) { w.Finish(p.GetSha256(), p.GetSize()+1) },
		"not finished": func(*outTap, *pb.Paper) {},
	} {
		t.Run(name, func(t *testing.T) {
			fx := newTapFixture(t, maxOutTaps)
			p := fx.paper(t, "p1", content)
			w := fx.write(t, "p1", bytes.Repeat([]byte("x"), len(content)))
			finish(w, p)
			path, _, err := fx.m.PlaceNew(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, content) {
				t.Fatalf("placed %d bytes (%v), want the blob's %d", len(got), err, len(content))
			}
			if n := fx.copiesOpen(t); n != 0 {
				t.Fatalf("%d copies open after the placement", n)
			}
			if _, err := w.Write([]byte("more")); !errors.Is(err, errTapEnded) {
				t.Fatalf("write to the discarded copy: %v, want errTapEnded", err)
			}
			w.Abort() // what its download does then: nothing more happens
			if names := fx.outNames(t); len(names) != 1 || names[0] != "p1.pdf" {
				t.Fatalf("output folder holds %q", names)
			}
		})
	}
	t.Run("damaged blob without a copy", func(t *testing.T) {
		fx := newTapFixture(t, maxOutTaps)
		p := fx.paper(t, "p1", content)
		if err := os.WriteFile(fx.blobPath(p), bytes.Repeat([]byte("y"), len(content)), 0o644); err != nil {
			t.Fatal(err)
		}
		var ce *corruptBlobError
		if _, _, err := fx.m.PlaceNew(ctx, p); !errors.As(err, &ce) {
			t.Fatalf("PlaceNew = %v, want a corruptBlobError", err)
		}
	})
}

// The copies are bounded (at most max open), given only for the armed batch, and a second copy
// of a paper ends the first; the end of the run (close) aborts every copy left, finished or not,
// leaves no file and no descriptor, and gives no copy afterwards.
func TestOutTapsBoundAndEnd(t *testing.T) {
	fx := newTapFixture(t, 3)
	before := openIn(t, fx.out)
	s := fx.m.taps
	if w := s.Open("other-batch", "p1"); w != nil {
		t.Fatal("a copy for another batch")
	}
	a := fx.write(t, "a", []byte("%PDF-a"))
	a2 := fx.write(t, "a", []byte("%PDF-a again"))
	if _, err := a.Write([]byte("x")); !errors.Is(err, errTapEnded) {
		t.Fatalf("the first copy of a paper still open after a second: %v", err)
	}
	b := fx.write(t, "b", []byte("%PDF-b"))
	b.Finish(strings.Repeat("0", 64), 6)
	c := fx.write(t, "c", []byte("%PDF-c"))
	if w := s.Open("b", "d"); w != nil {
		t.Fatal("a fourth copy beyond the bound of 3")
	}
	if n := fx.copiesOpen(t); n != 3 {
		t.Fatalf("%d copies open, want 3", n)
	}
	c.Abort() // its download failed: a place is free again
	d := fx.write(t, "d", []byte("%PDF-d"))
	if got := openIn(t, fx.out) - before; got != 3 {
		t.Fatalf("%d descriptors in the output folder, want 3 (a2, b, d)", got)
	}

	s.close()
	if n := fx.copiesOpen(t); n != 0 {
		t.Fatalf("%d copies open after the end of the run", n)
	}
	if got := openIn(t, fx.out) - before; got != 0 {
		t.Fatalf("%d descriptors left in the output folder", got)
	}
	for _, w := range []*outTap{a2, d} {
		if _, err := w.Write([]byte("x")); !errors.Is(err, errTapEnded) {
			t.Fatalf("write after the end of the run: %v", err)
		}
		w.Abort()
	}
	if w := s.Open("b", "e"); w != nil {
		t.Fatal("a copy after the end of the run")
	}
	if names := fx.outNames(t); len(names) != 0 {
		t.Fatalf("output folder holds %q", names)
	}
}

// `get` writes each downloaded PDF into the output folder as it receives it: its placement reads
// no blob (every blob is damaged on disk before its paper is placed, and every output file still
// holds the origin's bytes), no copy is left open at the end, and the output folder holds exactly
// the PDFs. (Before, the placement copied the blob: every paper failed as damaged.)
func TestGetWritesOutputAsItDownloads(t *testing.T) {
	const n = 8
	srv := pdfOrigin(t, nil)
	out := filepath.Join(t.TempDir(), "out")
	blobs := filepath.Join(out, ".paperfetch", "blobs")
	var stdout, stderr syncbuf.Buffer
	a := &app{env: Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }},
		wrapPlace: func(next placeFunc) placeFunc {
			return func(ctx context.Context, u *pb.PaperUpdate) (string, error) {
				src, ok := blobstore.KeyPath(blobs, u.GetBlobKey())
				if !ok {
					return "", errors.New("bad blob key " + u.GetBlobKey())
				}
				if err := os.WriteFile(src, bytes.Repeat([]byte("d"), int(u.GetSize())), 0o644); err != nil {
					return "", err
				}
				return next(ctx, u)
			}
		}}
	report := filepath.Join(t.TempDir(), "report.json")
	before := openIn(t, out)
	if err := a.get(context.Background(), append(getArgs(out, "--quiet", "--report", report), writeList(t, srv, n))); err != nil {
		t.Fatalf("get: %v\n%s", err, stderr.String())
	}
	checkPlaced(t, out, readTestReport(t, report), n)
	if got := openIn(t, out) - before; got != 0 {
		t.Fatalf("%d descriptors left in the output folder", got)
	}
}

// TestOutTapsCreateOutsideTheLock: a copy's file is made outside the set's lock, so a slow file
// creation (milliseconds on a file system busy with recent deletions) does not hold up the other
// downloads' copies (on the old code the second Open waited for the first creation: this test
// hung); and close waits for a creation under way, whose file is then discarded.
func TestOutTapsCreateOutsideTheLock(t *testing.T) {
	fx := newTapFixture(t, 8)
	s := fx.m.taps
	entered, release := make(chan struct{}), make(chan struct{})
	s.create = func(d *atomicfile.Dir) (*atomicfile.File, error) {
		if d == nil {
			return nil, errors.New("no folder")
		}
		select {
		case <-entered:
		default:
			close(entered)
			<-release
		}
		return d.Create()
	}
	slow := make(chan bool)
	go func() { slow <- s.Open("b", "slow") != nil }()
	<-entered
	fast := s.Open("b", "fast")
	if fast == nil {
		t.Fatal("no copy while another copy's file was being made")
	}
	fast.Abort()
	closed := make(chan struct{})
	go func() { s.close(); close(closed) }()
	for disarmed := false; !disarmed; runtime.Gosched() {
		s.mu.Lock()
		disarmed = s.dir == nil
		s.mu.Unlock()
	}
	for range 100 {
		runtime.Gosched() // give a close that does not wait every chance to return
	}
	select {
	case <-closed:
		t.Fatal("close returned while a copy's file was being made")
	default:
	}
	close(release)
	<-closed
	if <-slow {
		// Open may have made its file before close disarmed the set: close then ended it.
		t.Log("the stalled copy was made before close")
	}
	if n := fx.copiesOpen(t); n != 0 {
		t.Fatalf("%d copy files left open after close", n)
	}
}
