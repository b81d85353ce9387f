//go:build !linux

package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// errNoUnnamed: unnamed files are a Linux feature; elsewhere Create uses a temporary name.
var errNoUnnamed = errors.New("atomicfile: no unnamed files on this system")

func createUnnamed(string) (*os.File, error) { return nil, errNoUnnamed }

func linkUnnamed(*os.File, string) error { return errNoUnnamed }

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

func (d *Dir) close() error { return nil }
