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
// what the fetchers' own commit costs without the download.
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
package main

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/paperfetch/paperfetch/internal/blobstore"
)

func main() {
	dir := flag.String("dir", "", "folder to write into (created)")
	n := flag.Int("n", 2000, "number of files")
	size := flag.Int("size", 65536, "bytes per file")
	conc := flag.Int("concurrency", 16, "parallel writers")
	group := flag.Bool("group", false, "commit through blobstore.Committer, as the fetchers do, in the -blob-sync mode")
	mode := blobstore.DefaultSyncMode
	flag.TextVar(&mode, "blob-sync", mode, "with -group, the Committer's mode: group or per-file (the fetchers' --blob-sync; default theirs)")
	existing := flag.Bool("existing", false, "write nothing: make the files already in -dir durable (open, [SHA-256], fdatasync, close; then fsync of -dir)")
	hash := flag.Bool("hash", false, "with -existing, SHA-256 every file's content before syncing it")
	flag.Parse()
	var err error
	if *existing {
		var st syncStats
		if st, err = syncExisting(*dir, *conc, *hash); err == nil {
			fmt.Printf("%d files synced, %d bytes hashed, digest %x\n", st.files, st.hashed, st.digest)
		}
	} else {
		if !*group {
			mode = 0
		}
		err = run(*dir, *n, *size, *conc, mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsyncfloor:", err)
		os.Exit(1)
	}
}

// run writes n files; through a blobstore.Committer in mode when mode is set, else as commit
// does.
func run(dir string, n, size, conc int, mode blobstore.SyncMode) error {
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
					commitOne = func(dir, tmp string, i int, buf []byte) error { return groupCommit(committer, tmp, i, buf) }
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

// groupCommit writes file i and commits it through c (under a two-level key, as a blob).
func groupCommit(c *blobstore.Committer, tmp string, i int, buf []byte) error {
	f, err := os.Create(filepath.Join(tmp, fmt.Sprintf("%08d", i)))
	if err != nil {
		return err
	}
	if _, err := f.Write(buf); err != nil {
		_ = f.Close()
		return err
	}
	_, err = c.Commit(f, fmt.Sprintf("sha256/%02x/%08d.pdf", i%256, i))
	return err
}

// syncStats is what syncExisting did: files synced, bytes hashed and the XOR of the files'
// SHA-256 (an order-independent digest of the set; zero when not hashing).
type syncStats struct {
	files  int
	hashed int64
	digest [sha256.Size]byte
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
	if hash {
		h := sha256.New()
		n, err := io.CopyBuffer(h, onlyReader{f}, buf)
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("hash %s: %w", path, err)
		}
		st.hashed += n
		for i, b := range h.Sum(nil) {
			st.digest[i] ^= b
		}
	}
	if err := syncData(f); err != nil {
		_ = f.Close()
		return err
	}
	st.files++
	return f.Close()
}

// onlyReader hides the file's WriteTo, so that io.CopyBuffer reads through the given buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
