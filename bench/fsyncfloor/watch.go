package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"

	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// watchEvent is one thing the folder's watch reported: a name to look at again (closed after
// writing, moved in, moved out or deleted), or, with overflow set, that events were lost.
type watchEvent struct {
	name     string
	overflow bool
}

// processFunc makes the file name in the folder durable (hashing it first when asked), through
// buf; present is false when no regular file has that name any more.
type processFunc func(name string, buf []byte) (res fileResult, present bool, err error)

// runWatch creates dir (absent or empty), watches it, runs args as a child process with this
// process's standard output and error, and makes every file the child writes into dir durable
// with conc workers as soon as it is closed (hashing it first with hash); when the child has
// exited and every file has been processed after its last close, it fsyncs dir. At most
// maxFiles files are tracked at once. A failing child is an error.
func runWatch(ctx context.Context, dir string, maxFiles, conc int, hash bool, args []string) (syncStats, error) {
	if dir == "" || maxFiles <= 0 || conc <= 0 || len(args) == 0 {
		return syncStats{}, errors.New("-watch needs -dir, a positive -n and -concurrency, and a command after --")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return syncStats{}, err
	}
	if err := checkEmpty(dir); err != nil {
		return syncStats{}, err
	}
	w, err := newDirWatch(dir)
	if err != nil {
		return syncStats{}, err
	}
	defer w.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return syncStats{}, err
	}
	// The reader stops after the child has exited and every event queued until then has been
	// delivered (w.stop); it closes events.
	events := make(chan []watchEvent)
	readDone := make(chan error, 1)
	go func() {
		err := w.run(events)
		if err != nil {
			cancel()
		}
		readDone <- err
	}()
	waitDone := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		w.stop()
		waitDone <- err
	}()
	process := func(name string, buf []byte) (fileResult, bool, error) { return syncEntry(dir, name, hash, buf) }
	st, trackErr := track(dir, events, conc, maxFiles, cancel, process)
	readErr, waitErr := <-readDone, <-waitDone
	switch {
	case readErr != nil:
		return syncStats{}, fmt.Errorf("watch %s: %w", dir, readErr)
	case trackErr != nil:
		return syncStats{}, trackErr
	case waitErr != nil:
		return syncStats{}, fmt.Errorf("%s: %w", args[0], waitErr)
	}
	if err := blobstore.SyncDir(dir); err != nil {
		return syncStats{}, err
	}
	return st, nil
}

// checkEmpty fails unless dir is an empty folder: runWatch sees only the files written after
// it starts.
func checkEmpty(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := d.ReadDir(1); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("not empty")
		}
		return fmt.Errorf("-watch: %s: %w", dir, err)
	}
	return nil
}

// fileState is what track knows of one name.
type fileState struct {
	queued  bool       // waiting for a worker (its pass has not begun)
	running bool       // at a worker
	again   bool       // an event arrived while running: process it again after this pass
	epoch   int        // overflows read before its latest pass was handed to a worker
	have    bool       // res holds the latest pass's result
	res     fileResult // the latest pass's result
}

// passDone is a worker's report of one pass on a name.
type passDone struct {
	name    string
	res     fileResult
	present bool
	err     error
}

// track processes the names events reports, with conc workers running process, until events
// is closed and every name has been processed after its last event; names are never processed
// by two workers at once, and a name reported while it is at a worker is processed again
// afterwards. After an overflow it then rescans dir (see the package comment). It returns the
// summary of the files present at the end; on the first error it calls fail, stops handing
// out work and keeps reading events until they are closed. It holds at most maxFiles names.
func track(dir string, events <-chan []watchEvent, conc, maxFiles int, fail func(), process processFunc) (syncStats, error) {
	jobs := make(chan string)
	// One result per worker at most is ever unread when track returns: buffered, no worker
	// blocks on it.
	results := make(chan passDone, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for name := range jobs {
				res, present, err := process(name, buf)
				results <- passDone{name: name, res: res, present: present, err: err}
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()

	files := make(map[string]*fileState)
	var pending []string // the queued names, in order; at most len(files)
	var firstErr error
	setErr := func(err error) {
		if firstErr == nil {
			firstErr = err
			fail()
		}
	}
	epoch, busy, passes := 0, 0, 0
	note := func(name string) {
		st := files[name]
		if st == nil {
			if len(files) >= maxFiles {
				setErr(fmt.Errorf("more than -n %d files in %s", maxFiles, dir))
				return
			}
			st = &fileState{}
			files[name] = st
		}
		switch {
		case st.queued:
		case st.running:
			st.again = true
		default:
			st.queued = true
			pending = append(pending, name)
		}
	}
	for events != nil || busy > 0 || (len(pending) > 0 && firstErr == nil) {
		var send chan<- string
		var next string
		if len(pending) > 0 && firstErr == nil {
			send, next = jobs, pending[0]
		}
		select {
		case batch, ok := <-events:
			if !ok {
				events = nil
				if epoch > 0 && firstErr == nil {
					if err := rescan(dir, files, epoch, note); err != nil {
						setErr(err)
					}
				}
				continue
			}
			for _, ev := range batch {
				if ev.overflow {
					epoch++
				} else if ev.name != "" {
					note(ev.name)
				}
			}
		case send <- next:
			pending[0] = ""
			pending = pending[1:]
			st := files[next]
			st.queued, st.running, st.epoch = false, true, epoch
			busy++
		case d := <-results:
			busy--
			passes++
			st := files[d.name]
			st.running = false
			if d.err != nil {
				setErr(d.err)
				continue
			}
			st.have, st.res = d.present, d.res
			switch {
			case st.again:
				st.again, st.queued = false, true
				pending = append(pending, d.name)
			case !st.have:
				delete(files, d.name)
			}
		}
	}
	if firstErr != nil {
		return syncStats{}, firstErr
	}
	total := syncStats{passes: passes}
	for _, st := range files {
		if st.have {
			total.add(st.res)
		}
	}
	return total, nil
}

// rescan, after an overflow (epoch overflows read so far), notes every name in dir that track
// has not seen and every name whose latest pass was handed out before the latest overflow was
// read: the events lost in an overflow precede it. dir is read readDirBatch entries at a time.
func rescan(dir string, files map[string]*fileState, epoch int, note func(string)) error {
	for name, st := range files {
		if st.epoch < epoch {
			note(name)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		ents, err := d.ReadDir(readDirBatch)
		for _, e := range ents {
			if _, seen := files[e.Name()]; !seen && e.Type().IsRegular() {
				note(e.Name())
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
