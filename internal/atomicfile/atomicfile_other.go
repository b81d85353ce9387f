//go:build !linux

package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// errNoUnnamed: unnamed files are a Linux feature; elsewhere Create uses a temporary name.
var errNoUnnamed = errors.New("atomicfile: no unnamed files on this system")

func createUnnamed(string) (*os.File, error) { return nil, errNoUnnamed }

func linkUnnamed(*os.File, string) error { return errNoUnnamed }

// CreateUnnamed opens a new unnamed file in dir: unsupported here (errors.ErrUnsupported).
func CreateUnnamed(string) (*os.File, error) {
	return nil, fmt.Errorf("%w: %w", errors.ErrUnsupported, errNoUnnamed)
}

func rename(f *os.File, _ string) (*os.File, error) { _ = f.Close(); return nil, errNoUnnamed }

func (l *Linker) link(*os.File, string) error { return errNoUnnamed }

// openDir checks that path is a folder; files are then made and opened by path.
func openDir(path string) (*Dir, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, &os.PathError{Op: "open", Path: path, Err: errors.New("not a folder")}
	}
	d := &Dir{path: path, fd: -1}
	d.noUnnamed.Store(true)
	return d, nil
}

func (d *Dir) createUnnamed() (*os.File, error) { return nil, errNoUnnamed }

func unsupported(err error) bool { return errors.Is(err, errNoUnnamed) }

func (d *Dir) linkUnnamed(*os.File, string) error { return errNoUnnamed }

func (d *Dir) open(name string) (*os.File, error) { return os.Open(filepath.Join(d.path, name)) }

// readFile is ReadFile through an *os.File.
func (d *Dir) readFile(name string, buf []byte, want int) (int, error) {
	f, err := d.open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for n < len(buf) {
		k, err := f.Read(buf[n:])
		short := k < len(buf)-n
		n += k
		if errors.Is(err, io.EOF) || (err == nil && k == 0) || (short && n >= want) {
			break
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeFile is WriteFile: no unnamed files here (noUnnamed is set).
func (d *Dir) writeFile(name string, data []byte) error { return d.writeNamed(name, data) }

func (d *Dir) close() error { return nil }
