// Package reflink clones a file's data into another file without copying it, where the file
// system can share extents between files (Btrfs, XFS, bcachefs, OpenZFS 2.2+: the FICLONE
// ioctl). A clone is an independent file: writing to either leaves the other unchanged, unlike a
// hard link.
package reflink

import (
	"errors"
	"os"
)

// ErrUnsupported is returned by Clone where cloning is not possible: another operating system,
// a file system without shared extents, or two files on different file systems. The caller
// copies instead.
var ErrUnsupported = errors.New("reflink: cloning is not supported here")

// Clone makes dst's data a copy-on-write clone of src's. dst must be open for writing and
// empty. It returns ErrUnsupported (possibly wrapped) when the file system cannot clone.
func Clone(dst, src *os.File) error { return clone(dst, src) }
