// Command fsyncfloor measures what durable storage alone costs on this disk: it writes N files
// of SIZE bytes with CONCURRENCY writers the way a careful downloader commits a blob (write a
// temporary file, fsync it, rename it into a two-level content-addressed folder, fsync that
// folder), and nothing else. bench/run times it next to the downloaders as a floor: no HTTP,
// no hashing, no bookkeeping, only the durability a "completed" report needs.
//
//	fsyncfloor -dir DIR -n 2000 -size 65536 -concurrency 16
//
// With -group it commits through blobstore.Committer instead, the fetchers' own commit, in the
// mode -blob-sync names (default: the fetchers' default, blobstore.DefaultSyncMode; "group"
// batches concurrent commits around syncfs(2), "per-file" is fdatasync, rename, folder fsync):
// what the fetchers' own commit costs without the download. With -unnamed as well, each
// temporary file is unnamed (O_TMPFILE, as the fetchers' spool files are where the file system
// has them) and linked into place (Committer.CommitUnnamed) instead of renamed.
//
// With -existing it writes nothing: it makes the regular files already directly in DIR durable
// the way paperfetch makes a download durable, with CONCURRENCY workers: per file open, SHA-256
// of the content (with -hash), fdatasync, close; then one fsync of DIR (-n and -size are
// ignored). Run after `curl --output-dir DIR`, it is the cheapest way to get curl's files
// durable and hashed: what paperfetch's promises cost on top of curl. It prints the number of
// files, the bytes hashed and an order-independent digest of the set (the XOR of the files'
// SHA-256, zero without -hash).
//
//	fsyncfloor -existing -hash -dir DIR -concurrency 16
//
// With -hash it also counts the files that do not start with "%PDF-" (paperfetch's first
// check of a PDF) and prints that count after the digest.
//
// With -watch it runs a command (a downloader writing into DIR) and does the work of -existing
// while the command runs, each file as soon as it is written: the cheapest pipelined durable
// peer, in which hashing and syncing overlap the downloads instead of following them.
//
//	fsyncfloor -watch -hash -n 2000 -dir DIR -concurrency 16 -- curl --output-dir DIR ...
//
// It creates DIR (which must be absent or empty), watches it with inotify (IN_CLOSE_WRITE,
// IN_MOVED_TO, and IN_DELETE and IN_MOVED_FROM for names that leave it) before it starts the
// command, and CONCURRENCY workers open each regular file named by an event, SHA-256 it (with
// -hash), fdatasync and close it. When the command has exited and every event has been read
// and its file processed, it fsyncs DIR and prints the -existing summary of the files then in
// DIR. A non-zero exit of the command is an error (after the summary's work is done). -n bounds
// the number of files it tracks at once (more is an error).
//
// Every file is processed at least once after its last close, so the guarantee is the one
// -existing gives after the command: an event is queued by the kernel when the file is closed
// (or renamed into DIR), so a pass that begins after the file's last event was read opens the
// file after its last write; its fdatasync makes that final content durable and its hash is of
// that content. A file whose event arrives while a pass on it is under way is processed again
// after that pass (passes on one file never overlap; events arriving while it waits for a
// worker add nothing, its pass has not begun). The fsync of DIR comes after the command has
// exited, so every name the command created is in it. If the kernel's event queue overflows
// (IN_Q_OVERFLOW: events were lost), every file whose latest pass began before the overflow
// was read, and every file in DIR it has not seen, is processed again once the command has
// exited: a lost event can only belong to a close before the overflow was queued.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

func main() {
	dir := flag.String("dir", "", "folder to write into (created)")
	n := flag.Int("n", 2000, "number of files (with -watch: the most files it tracks at once)")
	size := flag.Int("size", 65536, "bytes per file")
	conc := flag.Int("concurrency", 16, "parallel writers")
	group := flag.Bool("group", false, "commit through blobstore.Committer, as the fetchers do, in the -blob-sync mode")
	mode := blobstore.DefaultSyncMode
	unnamed := flag.Bool("unnamed", false, "with -group, unnamed temporary files (O_TMPFILE) linked into place, as the fetchers' spool files")
	flag.TextVar(&mode, "blob-sync", mode, "with -group, the Committer's mode: group or per-file (the fetchers' --blob-sync; default theirs)")
	existing := flag.Bool("existing", false, "write nothing: make the files already in -dir durable (open, [SHA-256], fdatasync, close; then fsync of -dir)")
	watch := flag.Bool("watch", false, "run the command after --, making each file it writes into -dir durable as -existing does, as soon as it is closed (Linux: inotify)")
	hash := flag.Bool("hash", false, "with -existing or -watch, SHA-256 every file's content before syncing it, and count the files not starting with %PDF-")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *existing || *watch:
		var st syncStats
		if *watch {
			st, err = runWatch(ctx, *dir, *n, *conc, *hash, flag.Args())
		} else {
			st, err = syncExisting(*dir, *conc, *hash)
		}
		if err == nil {
			fmt.Println(st.summary(*hash))
		}
	default:
		if !*group {
			mode = 0
		}
		err = run(*dir, *n, *size, *conc, mode, *unnamed)
	}
	if err != nil {
		stop()
		fmt.Fprintln(os.Stderr, "fsyncfloor:", err)
		os.Exit(1)
	}
}

// run writes n files; through a blobstore.Committer in mode when mode is set (unnamed: from
// unnamed files), else as commit does.
func run(dir string, n, size, conc int, mode blobstore.SyncMode, unnamed bool) error {
	if dir == "" || n <= 0 || size <= 0 || conc <= 0 {
		return errors.New("-dir, and positive -n, -size and -concurrency, are required")
	}
	tmp := filepath.Join(dir, ".tmp")
	var committer *blobstore.Committer
	if mode != 0 {
		tmp = blobstore.TempDir(dir)
		committer = blobstore.NewCommitter(dir, mode)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	jobs := make(chan int)
	errs := make(chan error, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range jobs {
				commitOne := commit
				if committer != nil {
					commitOne = func(dir, tmp string, i int, buf []byte) error { return groupCommit(committer, tmp, i, buf, unnamed) }
				}
				if err := commitOne(dir, tmp, i, buf); err != nil {
					errs <- err
					for range jobs {
					}
					return
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs
}

// commit writes file i durably: temporary file, fsync, rename, fsync of the folder.
func commit(dir, tmp string, i int, buf []byte) error {
	name := fmt.Sprintf("%08d", i)
	tp := filepath.Join(tmp, name)
	f, err := os.Create(tp)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	sub := filepath.Join(dir, fmt.Sprintf("%02x", i%256))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tp, filepath.Join(sub, name)); err != nil {
		return err
	}
	d, err := os.Open(sub)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// groupCommit writes file i and commits it through c (under a two-level key, as a blob); with
// unnamed from an unnamed file.
func groupCommit(c *blobstore.Committer, tmp string, i int, buf []byte, unnamed bool) error {
	var f *os.File
	var err error
	if unnamed {
		f, err = atomicfile.CreateUnnamed(tmp)
	} else {
		f, err = os.Create(filepath.Join(tmp, fmt.Sprintf("%08d", i)))
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(buf); err != nil {
		_ = f.Close()
		return err
	}
	key := fmt.Sprintf("sha256/%02x/%08d.pdf", i%256, i)
	if unnamed {
		_, err = c.CommitUnnamed(f, key, int64(len(buf)))
	} else {
		_, err = c.Commit(f, key)
	}
	return err
}

// syncStats is what syncExisting or runWatch did: files synced, bytes hashed, the XOR of the
// files' SHA-256 (an order-independent digest of the set; zero when not hashing) and the files
// not starting with "%PDF-" (when hashing); passes counts the files opened, synced and closed,
// which runWatch may do more than once for a file.
type syncStats struct {
	files  int
	hashed int64
	digest [sha256.Size]byte
	notPDF int
	passes int
}

// add counts the file with result r.
func (st *syncStats) add(r fileResult) {
	st.files++
	st.hashed += r.size
	for i, b := range r.sum {
		st.digest[i] ^= b
	}
	if r.hashed && !r.pdf {
		st.notPDF++
	}
}

// summary is the line fsyncfloor prints: files, bytes hashed, digest, and with hash the files
// that are not PDFs.
func (st syncStats) summary(hash bool) string {
	line := fmt.Sprintf("%d files synced, %d bytes hashed, digest %x", st.files, st.hashed, st.digest)
	if hash {
		line += fmt.Sprintf(", %d not starting with %%PDF-", st.notPDF)
	}
	return line
}

// fileResult is what hashing one file found: its size and SHA-256, and whether it starts with
// "%PDF-" (all zero when hashed is false).
type fileResult struct {
	hashed bool
	pdf    bool
	size   int64
	sum    [sha256.Size]byte
}

// pdfMagic starts every PDF.
const pdfMagic = "%PDF-"

// hashContent reads r to its end through buf and returns its size, SHA-256 and whether it
// starts with pdfMagic.
func hashContent(r io.Reader, buf []byte) (fileResult, error) {
	h := sha256.New()
	var head [len(pdfMagic)]byte
	var res fileResult
	for {
		n, err := r.Read(buf)
		if res.size < int64(len(head)) {
			copy(head[res.size:], buf[:n])
		}
		h.Write(buf[:n])
		res.size += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fileResult{}, err
		}
	}
	res.hashed = true
	res.pdf = string(head[:]) == pdfMagic
	h.Sum(res.sum[:0])
	return res, nil
}

// readDirBatch bounds how many folder entries syncExisting holds at once.
const readDirBatch = 1024

// syncExisting makes every regular file directly in dir durable with conc workers, the way
// paperfetch commits a download: open, SHA-256 of the content when hash is set, fdatasync,
// close; then one fsync of dir, so that the names are durable too. Subfolders and other
// entries are skipped. The folder is read readDirBatch entries at a time.
func syncExisting(dir string, conc int, hash bool) (syncStats, error) {
	if dir == "" || conc <= 0 {
		return syncStats{}, errors.New("-dir and a positive -concurrency are required")
	}
	d, err := os.Open(dir)
	if err != nil {
		return syncStats{}, err
	}
	defer d.Close()
	jobs := make(chan string)
	errs := make(chan error, conc)
	per := make([]syncStats, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for name := range jobs {
				if err := syncFile(filepath.Join(dir, name), hash, buf, &per[w]); err != nil {
					errs <- err
					for range jobs {
					}
					return
				}
			}
		})
	}
	var listErr error
	for listErr == nil {
		var ents []os.DirEntry
		ents, listErr = d.ReadDir(readDirBatch)
		for _, e := range ents {
			if e.Type().IsRegular() {
				jobs <- e.Name()
			}
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return syncStats{}, err
	}
	if !errors.Is(listErr, io.EOF) {
		return syncStats{}, listErr
	}
	var total syncStats
	for _, st := range per {
		total.files += st.files
		total.hashed += st.hashed
		total.notPDF += st.notPDF
		total.passes += st.passes
		for i := range total.digest {
			total.digest[i] ^= st.digest[i]
		}
	}
	return total, blobstore.SyncDir(dir)
}

// syncFile makes the file at path durable (hashing it first when hash is set, through buf) and
// adds it to st.
func syncFile(path string, hash bool, buf []byte, st *syncStats) error {
	f, err := blobstore.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	var res fileResult
	if hash {
		if res, err = hashContent(f, buf); err != nil {
			_ = f.Close()
			return fmt.Errorf("hash %s: %w", path, err)
		}
	}
	if err := syncData(f); err != nil {
		_ = f.Close()
		return err
	}
	st.add(res)
	st.passes++
	return f.Close()
}
