//go:build !linux

package main

import "errors"

// dirWatch stands for the inotify watch of Linux builds; -watch is not available elsewhere.
type dirWatch struct{}

// errNoWatch is -watch's error where inotify does not exist.
func errNoWatch() error { return errors.New("-watch needs inotify: it runs on Linux only") }

func newDirWatch(string) (*dirWatch, error)     { return nil, errNoWatch() }
func (*dirWatch) run(chan<- []watchEvent) error { return errNoWatch() }
func (*dirWatch) stop()                         {}
func (*dirWatch) close()                        {}

func syncEntry(string, string, bool, []byte) (fileResult, bool, error) {
	return fileResult{}, false, errNoWatch()
}
