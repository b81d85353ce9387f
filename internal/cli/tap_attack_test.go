package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// A get interrupted while downloads are half-way (their copies open in the output folder) ends
// with no descriptor left in the output folder, no unnamed or temporary file in it, and only
// whole PDFs placed. With --link or --name-template no copy is ever opened: while the same
// downloads are held half-way, no file of the output folder is open (without them, one per
// held download is: the count sees the copies).
func TestGetInterruptedLeavesNoCopy(t *testing.T) {
	const fast, slowN = 4, 2 // 2 held: a fetcher holding both never has a third prefetched behind them
	for _, tc := range []struct {
		name   string
		extra  []string
		copies int // files open in OUT while the slow downloads are held (at least)
	}{
		{"copies", nil, slowN},
		{"link", []string{"--link"}, 0},
		{"name-template", []string{"--name-template", "{id}"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := filepath.Join(t.TempDir(), "out")
			var held atomic.Int32
			heldAll := make(chan struct{})
			srv := pdfOrigin(t, func(id string, r *http.Request) bool {
				n, _ := strconv.Atoi(id)
				return n < fast
			})
			// The slow papers send half their body, then wait for the end of the request.
			mux := http.NewServeMux()
			mux.HandleFunc("/slow/", func(w http.ResponseWriter, r *http.Request) {
				body := testPDF(filepath.Base(r.URL.Path))
				w.Header().Set("Content-Type", "application/pdf")
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				_, _ = w.Write(body[:len(body)/2])
				w.(http.Flusher).Flush()
				if held.Add(1) == slowN {
					close(heldAll)
				}
				<-r.Context().Done()
			})
			slow := httptest.NewServer(mux)
			t.Cleanup(slow.Close)
			slowSrv := slow.URL
			var b strings.Builder
			for i := range fast {
				b.WriteString(srv.URL + "/pdf/" + strconv.Itoa(i) + "\n")
			}
			for i := range slowN {
				b.WriteString(slowSrv + "/slow/" + strconv.Itoa(fast+i) + "\n")
			}
			list := filepath.Join(t.TempDir(), "list.txt")
			if err := os.WriteFile(list, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			before := openDirectlyIn(t, out)
			var stdout, stderr syncbuf.Buffer
			a := &app{env: Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }}}
			done := make(chan error, 1)
			go func() { done <- a.get(ctx, append(getArgs(out, "--quiet"), append(tc.extra, list)...)) }()
			stopped := false
			defer func() {
				if !stopped {
					cancel()
					<-done
				}
			}()
			select {
			case <-heldAll:
			case err := <-done:
				t.Fatalf("get ended before the slow downloads were held: %v\n%s", err, stderr.String())
			}
			// A download's copy is opened before its request (BodyTap.Open): every held one is.
			// (With copies, the fast papers' own may be open too.)
			if got := openDirectlyIn(t, out) - before; got < tc.copies || (tc.copies == 0 && got != 0) {
				t.Fatalf("%d files of the output folder open while %d downloads are half-way, want %d", got, slowN, tc.copies)
			}
			cancel()
			<-done
			stopped = true
			if got := openDirectlyIn(t, out) - before; got != 0 {
				t.Fatalf("%d descriptors left in the output folder after the interrupted get", got)
			}
			entries, err := os.ReadDir(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				name := e.Name()
				if name == ".paperfetch" || name == "failed.txt" {
					continue
				}
				if atomicfile.IsTempName(name) || !strings.HasSuffix(name, ".pdf") {
					t.Errorf("left in the output folder: %s", name)
					continue
				}
				got, err := os.ReadFile(filepath.Join(out, name))
				num, _, _ := strings.Cut(strings.TrimSuffix(name, ".pdf"), "-")
				if err != nil || string(got) != string(testPDF(num)) {
					t.Errorf("%s: not paper %s's bytes (%v)", name, num, err)
				}
			}
		})
	}
}

// openDirectlyIn returns how many of this process's descriptors are files directly in dir (not
// in its subfolders: the state folder's database, log and spool files), unnamed ones included
// ("DIR/#INODE (deleted)").
func openDirectlyIn(t *testing.T, dir string) int {
	t.Helper()
	return openWhere(t, func(target string) bool { return filepath.Dir(target) == dir })
}

// A paper leased again after its first download finished its copy (the completion lost, the
// lease expired) and before its placement: the second download's copy replaces the first, and
// the placement links whichever copy is finished with the digest the coordinator recorded, in
// any case of hex, else copies the blob. A copy finished for the paper of another batch is never
// used.
func TestTapReleasedBeforePlacement(t *testing.T) {
	ctx := context.Background()
	content := bytes.Repeat([]byte("%PDF-1.7 the recorded one\n"), 5000)
	changed := bytes.Repeat([]byte("%PDF-1.7 changed at origin\n"), 5000)
	t.Run("second copy other content", func(t *testing.T) {
		fx := newTapFixture(t, maxOutTaps)
		p := fx.paper(t, "p1", content)
		fx.write(t, "p1", content).Finish(p.GetSha256(), p.GetSize())
		w2 := fx.write(t, "p1", changed)
		w2.Finish(shaHex(changed), int64(len(changed)))
		p.Sha256 = strings.ToUpper(p.GetSha256())
		path, _, err := fx.m.PlaceNew(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("placed %d bytes (%v), want the recorded content", len(got), err)
		}
		if n := fx.copiesOpen(t); n != 0 {
			t.Fatalf("%d copies open", n)
		}
	})
	t.Run("second copy same content, upper-case digest", func(t *testing.T) {
		fx := newTapFixture(t, maxOutTaps)
		p := fx.paper(t, "p1", content)
		damaged := bytes.Repeat([]byte("d"), len(content))
		if err := os.WriteFile(fx.blobPath(p), damaged, 0o644); err != nil {
			t.Fatal(err)
		}
		fx.write(t, "p1", content[:100]) // the first download, cut short by the second
		fx.write(t, "p1", content).Finish(p.GetSha256(), p.GetSize())
		p.Sha256 = strings.ToUpper(p.GetSha256())
		path, _, err := fx.m.PlaceNew(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("placed %d bytes (%v), want the finished copy", len(got), err)
		}
	})
	t.Run("other batch", func(t *testing.T) {
		fx := newTapFixture(t, maxOutTaps)
		p := fx.paper(t, "p1", content)
		fx.write(t, "p1", changed).Finish(shaHex(changed), int64(len(changed)))
		p.BatchId = "other"
		p.Sha256, p.Size = shaHex(changed), int64(len(changed))
		if f := fx.m.taps.take("other", "p1", p.GetSha256(), p.GetSize()); f != nil {
			f.Abort()
			t.Fatal("a copy of batch b taken for batch other")
		}
	})
}

// Downloads, placements, failures and the end of the run racing on one set of copies (under
// -race): every copy ends once, whatever the order, and none is left open, nor any file but the
// placed ones, each with its paper's bytes.
func TestOutTapsRace(t *testing.T) {
	fx := newTapFixture(t, 8)
	before := openDirectlyIn(t, fx.out)
	ctx := context.Background()
	const papers, rounds = 24, 3
	ps := make([]*pb.Paper, papers)
	for i := range ps {
		ps[i] = fx.paper(t, "p"+strconv.Itoa(i), bytes.Repeat([]byte("%PDF-"+strconv.Itoa(i)+"\n"), 3000))
	}
	body := func(i int) []byte {
		return bytes.Repeat([]byte("%PDF-"+strconv.Itoa(i)+"\n"), 3000)
	}
	var wg sync.WaitGroup
	for r := range rounds {
		for i := range papers {
			// Two downloads of the paper (a re-lease) and its placement, at once.
			for range 2 {
				wg.Go(func() {
					w := fx.m.taps.Open("b", ps[i].GetSpec().GetPaperId())
					if w == nil {
						return
					}
					for b := body(i); len(b) > 0; b = b[min(len(b), 4096):] {
						if _, err := w.Write(b[:min(len(b), 4096)]); err != nil {
							w.Abort()
							return
						}
					}
					if (i+r)%5 == 0 {
						w.Abort()
						return
					}
					w.Finish(ps[i].GetSha256(), ps[i].GetSize())
				})
			}
			wg.Go(func() {
				if (i+r)%7 == 0 {
					fx.m.taps.drop("b", ps[i].GetSpec().GetPaperId())
					return
				}
				if _, _, err := fx.m.PlaceNew(ctx, ps[i]); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	fx.m.taps.close()
	if n := fx.copiesOpen(t); n != 0 {
		t.Fatalf("%d copies open after the end", n)
	}
	if got := openDirectlyIn(t, fx.out) - before; got != 0 {
		t.Fatalf("%d descriptors left in the output folder", got)
	}
	for _, name := range fx.outNames(t) {
		i, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "p"), ".pdf"))
		if err != nil {
			t.Errorf("left in the output folder: %s", name)
			continue
		}
		if got, err := os.ReadFile(filepath.Join(fx.out, name)); err != nil || !bytes.Equal(got, body(i)) {
			t.Errorf("%s: not its paper's bytes (%v)", name, err)
		}
	}
}

// shaHex is the hex SHA-256 of b.
func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Two downloads of one paper open their copies at once (a re-lease racing the lease it
// replaces), and the earlier Open's file creation is the slower: the later download's copy is
// the one kept (it is the live lease's), the earlier Open gets no copy, and nothing is left open.
// (Before, whichever creation ended last won: the stale download's copy ended the live one's.)
func TestOutTapsLaterOpenWins(t *testing.T) {
	fx := newTapFixture(t, 8)
	s := fx.m.taps
	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	s.create = func(d *atomicfile.Dir) (*atomicfile.File, error) {
		if first.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
		return d.Create()
	}
	earlier := make(chan *outTap, 1)
	go func() {
		w, _ := s.Open("b", "p1").(*outTap)
		earlier <- w
	}()
	<-entered
	later := fx.write(t, "p1", []byte("%PDF-later"))
	close(release)
	if w := <-earlier; w != nil {
		if _, err := w.Write([]byte("%PDF-earlier")); err == nil {
			t.Error("the earlier download's copy is still open beside the later one's")
		}
		w.Abort()
	}
	if _, err := later.Write([]byte(" more")); err != nil {
		t.Fatalf("the later download's copy was ended by the earlier Open: %v", err)
	}
	later.Abort()
	if n := fx.copiesOpen(t); n != 0 {
		t.Fatalf("%d copies open", n)
	}
}
