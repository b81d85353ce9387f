package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A Rename that cannot duplicate the descriptor (EMFILE: the descriptor limit is reached) closes
// f all the same, as it does when it succeeds: its caller drops f either way. Before, f was
// left open and unreferenced (a descriptor leaked until a garbage collection ran its
// finalizer), exactly when descriptors ran out. Not parallel: it lowers the process's limit.
func TestRenameClosesFileWhenDupFails(t *testing.T) {
	dir := t.TempDir()
	f := createUnnamedOrSkip(t, dir)
	defer f.Close()
	var l Linker
	name := filepath.Join(dir, "a.part")
	if err := l.Link(f, name); err != nil {
		t.Fatal(err)
	}
	// The lowest free descriptor becomes the limit: F_DUPFD_CLOEXEC finds none below it.
	probe, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	lowest := uint64(probe.Fd())
	_ = probe.Close()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = lowest
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip("cannot lower the descriptor limit:", err)
	}
	g, rerr := Rename(f, name)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if rerr == nil {
		_ = g.Close()
		t.Fatal("Rename succeeded at the descriptor limit")
	}
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("after a failed Rename (%v) f is still open (close: %v)", rerr, err)
	}
}
