//go:build linux

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData makes f's data durable with fdatasync(2), as the fetchers' commit does.
func syncData(f *os.File) error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}
