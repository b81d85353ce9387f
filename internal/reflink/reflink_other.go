//go:build !linux

package reflink

import "os"

func clone(*os.File, *os.File) error { return ErrUnsupported }
