package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/reflink"
)

// materializer puts succeeded papers into the output folder as OUT/<FileName(id)>.pdf. By
// default each is an ordinary file of its own: a reflink (copy-on-write clone) of the blob file
// where the file system offers it, else a copy, so that editing or deleting a PDF never touches
// the cache. With link set, it is a hard link to the blob file instead (no space used twice,
// but an edit to the PDF is an edit to the cache). A blob store that is not a local folder is
// read with ReadPaper. Every blob is checked (size and SHA-256) before it is reused.
type materializer struct {
	out       string
	bucketURL string // "" when the blob store is not local
	client    pb.CoordinatorServiceClient
	link      bool // hard links instead of copies (--link)
	// template is --name-template ("": FileName of the id); it needs the papers' specs.
	template string
	mu       sync.Mutex
	names    map[string]string // lower-case templated name -> paper id, to keep names unique
	bufs     sync.Pool         // *copier: the buffers and hash states of copies (none allocated per file)
	bigBufs  sync.Pool         // *copier with bigCopyBufSize buffers: copies of more than copyBufSize
	// noClone: a clone between the blob store and the output folder failed as unsupported, so
	// the next copies do not try again (both folders are fixed for the run: one failed ioctl
	// per file saved where the file system cannot clone, as on ext4).
	noClone atomic.Bool
	// outDir and blobDir, when set (holdDirs: get), are the output folder and the local blob
	// store's folder, held open for the run: output files are created and linked, and blobs
	// opened, relative to them (no walk of their paths per file, and the check of /proc that
	// unnamed files need made once). Without them (pull, tests) files are found by path.
	outDir, blobDir *atomicfile.Dir
	// taps, when set (get, without link or template, with outDir held), holds the output files
	// its downloads wrote as they received them: PlaceNew links a paper's finished one into
	// place instead of copying the blob.
	taps *outTaps
}

// holdDirs opens the output folder and the local blob store's folder for the run (outDir,
// blobDir); one that cannot be opened is used by path. release closes them.
func (m *materializer) holdDirs() {
	if d, err := atomicfile.OpenDir(m.out); err == nil {
		m.outDir = d
	}
	if dir, ok := blobstore.LocalDir(m.bucketURL); ok && m.bucketURL != "" {
		if d, err := atomicfile.OpenDir(dir); err == nil {
			m.blobDir = d
		}
	}
}

// release closes the folders of holdDirs, once no file is being placed.
func (m *materializer) release() {
	for _, d := range []**atomicfile.Dir{&m.outDir, &m.blobDir} {
		if *d != nil {
			_ = (*d).Close()
			*d = nil
		}
	}
}

// openBlob opens the local blob file src for reading: relative to blobDir when src is in it.
// The file is not registered with the poller (a syscall, not four).
func (m *materializer) openBlob(src string) (*os.File, error) {
	if rel, ok := m.heldBlob(src); ok {
		return m.blobDir.Open(rel)
	}
	return blobstore.OpenFile(src, os.O_RDONLY, 0)
}

// heldBlob returns the path of the blob file src relative to blobDir, when it is held and src
// is in it.
func (m *materializer) heldBlob(src string) (string, bool) {
	if d := m.blobDir; d != nil {
		if dir := d.Path(); len(src) > len(dir)+1 && src[:len(dir)] == dir && src[len(dir)] == filepath.Separator {
			return src[len(dir)+1:], true
		}
	}
	return "", false
}

// copyBufSize is the buffer of one copy: a small PDF in one read, up to 64 KiB with the spare
// byte of placeSmall (256 KiB buffers, dropped and reallocated by the garbage collector, cost
// 5 MB of peak RSS on 10,000 papers; 72 KiB is 9 of the runtime's 8 KiB pages, 64 KiB + 1
// would take as many).
const copyBufSize = 72 << 10

// bigCopyBufSize is the buffer of a copy of more than copyBufSize bytes: 4 times fewer read and
// write calls than copyBufSize, and still in a core's cache between the hash and the write
// (a 512 MiB copy: 0.874 CPU-s, against 0.925 with 64 KiB and 0.909 with 1 MiB; medians of 5
// alternating rounds).
const bigCopyBufSize = 256 << 10

// corruptBlobError is a stored blob whose size or SHA-256 is not the recorded one (a file
// changed through a hard link, a damaged disk). The blob is removed so that it is never
// reused.
type corruptBlobError struct {
	paperID, path, got, want string
}

// Error explains what happened and what to do.
func (e *corruptBlobError) Error() string {
	return fmt.Sprintf("the stored copy of %s (%s) is damaged (%s, want %s); it was removed: a new run downloads the paper again", e.paperID, e.path, e.got, e.want)
}

// Path returns where a paper's PDF goes, by its id (no --name-template).
func (m *materializer) Path(paperID string) string {
	return filepath.Join(m.out, FileName(paperID)+".pdf")
}

// localBlob returns the blob file of p when the blob store is a local folder: in blobDir when
// it is held (the bucket URL parsed once, not per paper), else blobstore.LocalPath.
func (m *materializer) localBlob(p *pb.Paper) (string, bool) {
	if m.bucketURL == "" {
		return "", false
	}
	if m.blobDir != nil {
		return blobstore.KeyPath(m.blobDir.Path(), p.GetBlobKey())
	}
	return blobstore.LocalPath(m.bucketURL, p.GetBlobKey())
}

// target returns where p's PDF goes: named by --name-template when set, else by its id.
func (m *materializer) target(p *pb.Paper) string {
	if m.template == "" {
		return m.Path(p.GetSpec().GetPaperId())
	}
	return filepath.Join(m.out, m.templatedName(p.GetSpec())+".pdf")
}

// PlaceNew is Place for a paper that just succeeded, whose file is most likely not in the
// output folder yet. When its download wrote the output file as it received it (taps: the
// bytes whose SHA-256 is the paper's, finished with the paper's digest and size), that file is
// linked into place: the blob is not read. With --link it first checks the blob (size and
// SHA-256: the fetcher's commit keeps an object that already existed without reading it, so
// "just downloaded" does not prove the blob file holds those bytes) and hard-links it under the
// final name (which appears whole or not at all, so neither a stat nor a temporary name is
// needed).
//
// Without --link it copies the blob (checked as it is copied) straight to the final name, with
// no stat of that name first: a paper that succeeded during this run's watch was not placed
// before (a file there from elsewhere, say an earlier run whose cache was deleted, is replaced
// by the verified copy: atomicfile). A cache hit may have its file in place already (an earlier
// batch on this folder): Place, which keeps a verified file, handles it.
func (m *materializer) PlaceNew(ctx context.Context, p *pb.Paper) (string, bool, error) {
	if !p.GetCached() {
		if target, ok := m.placeTapped(p); ok {
			return target, false, nil
		}
		if lp, ok := m.localBlob(p); ok {
			target := m.target(p)
			if m.link {
				if err := m.checkBlob(ctx, lp, p); err != nil {
					return "", false, err
				}
				if err := os.Link(lp, target); err == nil {
					return target, false, nil
				}
			} else {
				err := m.placeFromBlob(ctx, lp, target, p)
				if err == nil || !errors.Is(err, os.ErrNotExist) {
					return target, false, err
				}
				// The blob file is missing: Place fetches it with ReadPaper.
			}
		}
	}
	return m.Place(ctx, p)
}

// placeTapped links the output file that p's download wrote (taps) into place, when there is
// one finished with p's SHA-256 and size and p's file goes in the output folder itself, and
// reports whether it did. A copy that is not used, or whose link fails, is discarded: the
// paper is then placed from its blob.
func (m *materializer) placeTapped(p *pb.Paper) (string, bool) {
	if m.taps == nil {
		return "", false
	}
	f := m.taps.take(p.GetBatchId(), p.GetSpec().GetPaperId(), p.GetSha256(), p.GetSize())
	if f == nil {
		return "", false
	}
	target := m.target(p)
	if m.outDir == nil || filepath.Dir(target) != m.outDir.Path() || p.GetSha256() == "" {
		f.Abort()
		return "", false
	}
	if err := f.Commit(target); err != nil {
		return "", false
	}
	return target, true
}

// checkBlob verifies the size and SHA-256 of the local blob file src of p. A damaged blob is
// removed, reported and returned as a *corruptBlobError (corrupt); a missing one is an
// os.ErrNotExist error.
func (m *materializer) checkBlob(ctx context.Context, src string, p *pb.Paper) error {
	in, err := m.openBlob(src)
	if err != nil {
		return fmt.Errorf("open blob: %w", err)
	}
	defer in.Close()
	return m.verifyBlob(ctx, in, src, p)
}

// verifyBlob checks that the open blob file in (at src) has p's size and SHA-256, reading it
// to its end. A damaged blob is handled by corrupt.
func (m *materializer) verifyBlob(ctx context.Context, in *os.File, src string, p *pb.Paper) error {
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat blob: %w", err)
	}
	if st.Size() != p.GetSize() {
		return m.corrupt(ctx, in, src, p, fmt.Sprintf("%d bytes", st.Size()))
	}
	got, err := m.copyHashed(io.Discard, in, -1)
	if err != nil {
		return fmt.Errorf("read blob %s: %w", src, err)
	}
	if !strings.EqualFold(got, p.GetSha256()) {
		return m.corrupt(ctx, in, src, p, "sha256 "+got)
	}
	return nil
}

// corrupt handles the damaged blob file src of p (open as in, or nil): it is removed and reported to
// the coordinator (so that it is no cache hit any more, in this run or the next), and the
// returned *corruptBlobError says so; got describes what was found.
func (m *materializer) corrupt(ctx context.Context, in *os.File, src string, p *pb.Paper, got string) error {
	if in != nil {
		_ = in.Close()
	}
	_ = os.Remove(src)
	m.reportDamaged(ctx, p)
	return &corruptBlobError{paperID: p.GetSpec().GetPaperId(), path: src, got: got, want: fmt.Sprintf("%d bytes, sha256 %s", p.GetSize(), p.GetSha256())}
}

// Place makes sure the succeeded paper p is at Path(p's id), and returns the path and whether
// it was already there. A file already there with other content is replaced; without --link, a
// file that is a hard link to the blob (made by an earlier version) is replaced by a copy.
func (m *materializer) Place(ctx context.Context, p *pb.Paper) (string, bool, error) {
	target := m.target(p)
	blobPath, local := m.localBlob(p)
	if st, err := os.Stat(target); err == nil && st.Mode().IsRegular() && st.Size() == p.GetSize() {
		linked := false
		if local {
			if bst, err := os.Stat(blobPath); err == nil && os.SameFile(st, bst) {
				linked = true
			}
		}
		if (m.link || !linked) && m.fileHasSHA256(target, p.GetSha256()) {
			return target, true, nil
		}
	}
	if local {
		err := m.placeFromBlob(ctx, blobPath, target, p)
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			return target, false, err
		}
		// The blob file is missing locally: fall back to ReadPaper.
	}
	if err := m.pull(ctx, p, target); err != nil {
		return "", false, err
	}
	return target, false, nil
}

// placeFromBlob puts the local blob file src at dst, atomically, after checking the blob's
// size and SHA-256: a hard link with --link (a temporary name renamed into place), else a
// reflink or a copy (an unnamed file linked into place: atomicfile). A damaged blob is handled
// by corrupt.
func (m *materializer) placeFromBlob(ctx context.Context, src, dst string, p *pb.Paper) error {
	if done, err := m.placeSmall(ctx, src, dst, p); done {
		return err
	}
	in, err := m.openBlob(src)
	if err != nil {
		return fmt.Errorf("open blob: %w", err)
	}
	defer in.Close()
	if m.link {
		if err := m.verifyBlob(ctx, in, src, p); err != nil {
			return err
		}
		tmp := atomicfile.TempName(dst)
		if err := os.Link(src, tmp); err == nil {
			return renameInto(tmp, dst)
		}
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("read blob %s: %w", src, err)
		}
		// Another file system: copy instead.
	}
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat blob: %w", err)
	}
	if st.Size() != p.GetSize() {
		return m.corrupt(ctx, in, src, p, fmt.Sprintf("%d bytes", st.Size()))
	}
	// The blob has the recorded size (fstat above): its copy reads exactly that many bytes and
	// no read(2) to find its end; the copy is what is hashed and checked.
	if err := m.writeVerified(dst, in, p.GetSha256(), st.Size()); err != nil {
		var mm *shaMismatchError // declared here: errors.As moves it to the heap
		if errors.As(err, &mm) {
			return m.corrupt(ctx, in, src, p, "sha256 "+mm.got)
		}
		return err
	}
	return nil
}

// placeSmall is placeFromBlob for a small blob (shorter than a copy buffer) copied from the held
// blob folder into the held output folder, and reports whether it applied: not with --link, nor
// where the folders are not held, a clone may work (the first copy finds out), the SHA-256 is
// unknown or the blob is larger. The blob is read with one read(2) into a buffer one byte
// longer than its recorded size (no fstat: a longer blob fills the buffer), its SHA-256 checked,
// and the checked bytes written with one write(2) to an unnamed file linked into place
// (atomicfile.Dir.ReadFile, WriteFile): raw descriptors, no *os.File (7 system calls a paper
// instead of 10: no fstat, and no fcntl and finalizer per *os.File). A damaged blob is handled
// by corrupt; a missing one is an os.ErrNotExist error.
func (m *materializer) placeSmall(ctx context.Context, src, dst string, p *pb.Paper) (bool, error) {
	size, sha := p.GetSize(), p.GetSha256()
	if m.link || m.outDir == nil || !m.noClone.Load() || sha == "" || size < 0 || size >= copyBufSize {
		return false, nil
	}
	rel, ok := m.heldBlob(src)
	if !ok || filepath.Dir(dst) != m.outDir.Path() {
		return false, nil
	}
	c := m.copier()
	defer m.bufs.Put(c)
	n, err := m.blobDir.ReadFile(rel, c.buf[:size+1], int(size))
	if err != nil {
		return true, fmt.Errorf("read blob: %w", err)
	}
	switch {
	case int64(n) > size:
		return true, m.corrupt(ctx, nil, src, p, fmt.Sprintf("more than %d bytes", size))
	case int64(n) < size:
		return true, m.corrupt(ctx, nil, src, p, fmt.Sprintf("%d bytes", n))
	}
	data := c.buf[:n]
	c.h.Reset()
	c.h.Write(data)
	if got := c.sum(); !strings.EqualFold(got, sha) {
		return true, m.corrupt(ctx, nil, src, p, "sha256 "+got)
	}
	if err := m.outDir.WriteFile(filepath.Base(dst), data); err != nil {
		return true, fmt.Errorf("place %s: %w", dst, err)
	}
	return true, nil
}

// reportDamaged tells the coordinator that p's blob is damaged: ReadPaper checks the blob as it
// reads it and, finding it missing or damaged, records it as damaged (persistently), so that it
// is never a cache hit again until a new download of it is verified. Nothing is written.
func (m *materializer) reportDamaged(ctx context.Context, p *pb.Paper) {
	if m.client == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, embeddedCallTimeout)
	defer cancel()
	stream, err := m.client.ReadPaper(ctx, &pb.ReadPaperRequest{BatchId: p.GetBatchId(), PaperId: p.GetSpec().GetPaperId(), Offset: p.GetSize()})
	if err != nil {
		return
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return
		}
	}
}

// renameInto renames tmp to dst. When both are hard links to the same file, rename(2) does
// nothing and leaves tmp behind; it is removed then, so that no temporary file is ever left.
func renameInto(tmp, dst string) error {
	err := os.Rename(tmp, dst)
	if _, serr := os.Lstat(tmp); serr == nil {
		_ = os.Remove(tmp)
	}
	if err != nil {
		return fmt.Errorf("place %s: %w", dst, err)
	}
	return nil
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
			if status.Code(err) == codes.DataLoss {
				// The stored copy cannot be trusted: nothing of it is kept, and the
				// coordinator no longer hands it out.
				_ = f.Close()
				_ = os.Remove(part)
				return fmt.Errorf("the stored copy of %s is damaged or missing (%s); it is not used again: a new run downloads the paper again", paperID, status.Convert(err).Message())
			}
			if offset == 0 {
				_ = f.Close()
				_ = os.Remove(part) // empty: nothing to resume
			}
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

// shaMismatchError is a copy whose SHA-256 is not the expected one.
type shaMismatchError struct{ dst, got, want string }

// Error names the file and both digests.
func (e *shaMismatchError) Error() string {
	return fmt.Sprintf("copy to %s: sha256 %s, want %s", e.dst, e.got, e.want)
}

// writeVerified puts the content of r at dst, checking its SHA-256 (unless sha is empty): a
// reflink of r's file where the file system can clone (r is then read once to check it), else a
// copy hashed on the way. The file appears at dst whole or not at all, and an interrupted copy
// leaves nothing (atomicfile: an unnamed file linked into place, or a temporary name renamed).
// The output copy is not fsynced: the blob store holds the durable copy, and a torn output file
// is found (size, SHA-256) and replaced by the next run. size >= 0 is how many bytes r holds
// (known from a stat: what follows them is not read), -1 unknown (read to the end).
func (m *materializer) writeVerified(dst string, r io.Reader, sha string, size int64) error {
	var f *atomicfile.File
	var err error
	if dir := filepath.Dir(dst); m.outDir != nil && dir == m.outDir.Path() {
		f, err = m.outDir.Create()
	} else {
		f, err = atomicfile.Create(dir)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	committed := false
	defer func() {
		if !committed {
			f.Abort()
		}
	}()
	var got string
	if src, isFile := r.(*os.File); isFile && m.clone(f.File, src) {
		// The clone is the whole file: its hash must be too.
		if got, err = m.copyHashed(io.Discard, src, -1); err != nil {
			return fmt.Errorf("read %s: %w", src.Name(), err)
		}
	} else if got, err = m.copyHashed(f.File, r, size); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if sha != "" && got != strings.ToLower(sha) {
		return &shaMismatchError{dst: dst, got: got, want: sha}
	}
	committed = true
	return f.Commit(dst)
}

// clone makes dst a clone of src where the file systems can (reflink.Clone), remembering when
// they cannot.
func (m *materializer) clone(dst, src *os.File) bool {
	if m.noClone.Load() {
		return false
	}
	err := reflink.Clone(dst, src)
	if errors.Is(err, reflink.ErrUnsupported) {
		m.noClone.Store(true)
	}
	return err == nil
}

// copyHashed copies what is left of r to w (io.Discard: only hashes) through one of the
// materializer's buffers, and returns the SHA-256 of what it copied. With limit >= 0 it stops
// after limit bytes, without a read to find the end (a shorter r is copied whole).
func (m *materializer) copyHashed(w io.Writer, r io.Reader, limit int64) (string, error) {
	pool, size := &m.bufs, copyBufSize
	if limit > copyBufSize {
		pool, size = &m.bigBufs, bigCopyBufSize
	}
	c := takeCopier(pool, size)
	defer pool.Put(c)
	buf, h := c.buf, c.h
	h.Reset()
	for {
		if limit == 0 {
			return c.sum(), nil
		}
		chunk := buf
		if limit > 0 && limit < int64(len(chunk)) {
			chunk = chunk[:limit]
		}
		n, err := r.Read(chunk)
		if limit > 0 {
			limit -= int64(n)
		}
		if n > 0 {
			h.Write(buf[:n])
			if w != io.Discard {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return "", werr
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return c.sum(), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// copier is what a copy uses, kept for the next one (materializer.bufs, bigBufs): the buffer and the
// hash state (none allocated per file).
type copier struct {
	buf    []byte // copyBufSize or bigCopyBufSize
	h      hash.Hash
	digest [sha256.Size]byte // Sum appends here
}

// copier takes a copier from the pool (or makes one); put it back in m.bufs when done.
func (m *materializer) copier() *copier { return takeCopier(&m.bufs, copyBufSize) }

// takeCopier takes a copier from pool, or makes one with a buffer of size bytes.
func takeCopier(pool *sync.Pool, size int) *copier {
	c, _ := pool.Get().(*copier)
	if c == nil {
		c = &copier{buf: make([]byte, size), h: sha256.New()}
	}
	return c
}

// sum returns the hex SHA-256 of what h has hashed.
func (c *copier) sum() string {
	var x [2 * sha256.Size]byte
	hex.Encode(x[:], c.h.Sum(c.digest[:0]))
	return string(x[:])
}

// fileHasSHA256 reports whether the file at path has the SHA-256 sha.
func (m *materializer) fileHasSHA256(path, sha string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	got, err := m.copyHashed(io.Discard, f, -1)
	return err == nil && strings.EqualFold(got, sha)
}
