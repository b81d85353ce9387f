// Command fsyncfloor measures what durable storage alone costs on this disk: it writes N files
// of SIZE bytes with CONCURRENCY writers the way a careful downloader commits a blob (write a
// temporary file, fsync it, rename it into a two-level content-addressed folder, fsync that
// folder), and nothing else. bench/run times it next to the downloaders as a floor: no HTTP,
// no hashing, no bookkeeping, only the durability a "completed" report needs.
//
//	fsyncfloor -dir DIR -n 2000 -size 65536 -concurrency 16
//
// With -group it commits through blobstore.Committer instead, the fetchers' own group commit
// (per-file fdatasync, rename, folder fsync): what the fetchers' own commit costs without the
// download.
package main

import (
	"errors"
	"flag"
	"fmt"
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
	group := flag.Bool("group", false, "commit through blobstore.Committer (fdatasync, rename, folder fsync), as the fetchers do")
	flag.Parse()
	if err := run(*dir, *n, *size, *conc, *group); err != nil {
		fmt.Fprintln(os.Stderr, "fsyncfloor:", err)
		os.Exit(1)
	}
}

func run(dir string, n, size, conc int, group bool) error {
	if dir == "" || n <= 0 || size <= 0 || conc <= 0 {
		return errors.New("-dir, and positive -n, -size and -concurrency, are required")
	}
	tmp := filepath.Join(dir, ".tmp")
	var committer *blobstore.Committer
	if group {
		tmp = blobstore.TempDir(dir)
		committer = blobstore.NewCommitter(dir)
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
