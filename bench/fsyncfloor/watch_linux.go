//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// dirWatch is an inotify watch on one folder, and a pipe that tells its reader to finish.
type dirWatch struct {
	fd   int
	wake [2]int
}

// watchMask is what dirWatch asks inotify for: a file closed after writing, or a name moved
// in, moved out or deleted.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_ONLYDIR

// newDirWatch starts watching dir: events for files closed from now on are queued.
func newDirWatch(dir string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	w := &dirWatch{fd: fd, wake: [2]int{-1, -1}}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		w.close()
		return nil, &os.PathError{Op: "inotify_add_watch", Path: dir, Err: err}
	}
	if err := unix.Pipe2(w.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		w.close()
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	return w, nil
}

// inotifyBuf is the size of the buffer events are read into: room for at least 240 events of
// the longest name (NAME_MAX), and for a few thousand of curl's names.
const inotifyBuf = 64 << 10

// run sends the watch's events to events, a batch per read, until stop has been called and
// every event queued before it has been sent; then it closes events. The kernel queues a
// file's close event during the close, so once the child has been waited for and stop called,
// all of the child's events are queued: run reads until the queue is empty after it sees the
// wake-up, and returns.
func (w *dirWatch) run(events chan<- []watchEvent) error {
	defer close(events)
	buf := make([]byte, inotifyBuf)
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.wake[0]), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("poll: %w", err)
		}
		// Read before draining: the drain then ends after everything queued before stop.
		final := fds[1].Revents != 0
		for {
			n, err := unix.Read(w.fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				return fmt.Errorf("read inotify: %w", err)
			}
			batch, err := parseEvents(buf[:n])
			if err != nil {
				return err
			}
			events <- batch
		}
		if final {
			return nil
		}
	}
}

// parseEvents decodes the inotify events in b (whole events: the kernel never splits one
// across reads).
func parseEvents(b []byte) ([]watchEvent, error) {
	var batch []watchEvent
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		nameLen := int(binary.NativeEndian.Uint32(b[12:16]))
		end := unix.SizeofInotifyEvent + nameLen
		if end > len(b) {
			return nil, errors.New("inotify: truncated event")
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
		b = b[end:]
		switch {
		case mask&unix.IN_Q_OVERFLOW != 0:
			batch = append(batch, watchEvent{overflow: true})
		case mask&(unix.IN_IGNORED|unix.IN_UNMOUNT) != 0:
			return nil, errors.New("inotify: the folder's watch was removed (folder deleted or unmounted)")
		case mask&unix.IN_ISDIR != 0 || name == "":
			// A folder moved in or out, or an event on the folder itself: not a file of the set.
		default:
			batch = append(batch, watchEvent{name: name})
		}
	}
	return batch, nil
}

// stop tells run to deliver what is queued and finish. Call it once the child has exited.
func (w *dirWatch) stop() { _, _ = unix.Write(w.wake[1], []byte{1}) }

// close releases the watch and the pipe; run must have returned.
func (w *dirWatch) close() {
	for _, fd := range []int{w.fd, w.wake[0], w.wake[1]} {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
}

// syncEntry makes the regular file name in dir durable: open, SHA-256 of its content through
// buf (with hash), fdatasync, close. present is false, and nothing is done, when dir holds no
// regular file of that name (deleted, moved away, or not a regular file). The open does not
// follow symbolic links and does not block on a FIFO.
func syncEntry(dir, name string, hash bool, buf []byte) (fileResult, bool, error) {
	path := filepath.Join(dir, name)
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		return err
	})
	switch {
	case err == unix.ENOENT || err == unix.ELOOP:
		return fileResult{}, false, nil
	case err != nil:
		return fileResult{}, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileResult{}, false, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileResult{}, false, nil
	}
	var res fileResult
	if hash {
		if res, err = hashContent(fdReader(fd), buf); err != nil {
			return fileResult{}, false, &os.PathError{Op: "read", Path: path, Err: err}
		}
	}
	if err := ignoringEINTR(func() error { return unix.Fdatasync(fd) }); err != nil {
		return fileResult{}, false, &os.PathError{Op: "fdatasync", Path: path, Err: err}
	}
	return res, true, nil
}

// fdReader reads a file descriptor with read(2), io.EOF at its end.
type fdReader int

func (r fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(r), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// ignoringEINTR retries fn while it fails with EINTR.
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}
