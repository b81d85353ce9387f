// Command fsyncfloor measures what durable storage alone costs on this disk: it writes N files
// of SIZE bytes with CONCURRENCY writers the way a careful downloader commits a blob (write a
// temporary file, fsync it, rename it into a two-level content-addressed folder, fsync that
// folder), and nothing else. bench/run times it next to the downloaders as a floor: no HTTP,
// no hashing, no bookkeeping, only the durability a "completed" report needs.
//
//	fsyncfloor -dir DIR -n 2000 -size 65536 -concurrency 16
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

func main() {
	dir := flag.String("dir", "", "folder to write into (created)")
	n := flag.Int("n", 2000, "number of files")
	size := flag.Int("size", 65536, "bytes per file")
	conc := flag.Int("concurrency", 16, "parallel writers")
	flag.Parse()
	if err := run(*dir, *n, *size, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "fsyncfloor:", err)
		os.Exit(1)
	}
}

func run(dir string, n, size, conc int) error {
	if dir == "" || n <= 0 || size <= 0 || conc <= 0 {
		return errors.New("-dir, and positive -n, -size and -concurrency, are required")
	}
	tmp := filepath.Join(dir, ".tmp")
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
				if err := commit(dir, tmp, i, buf); err != nil {
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
