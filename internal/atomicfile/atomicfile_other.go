//go:build !linux

package atomicfile

import (
	"errors"
	"os"
)

// errNoUnnamed: unnamed files are a Linux feature; elsewhere Create uses a temporary name.
var errNoUnnamed = errors.New("atomicfile: no unnamed files on this system")

func createUnnamed(string) (*os.File, error) { return nil, errNoUnnamed }

func linkUnnamed(*os.File, string) error { return errNoUnnamed }
