package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// names lists the entries of dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// creators are the ways of writing a file: unnamed (Linux), under a temporary name, Create on
// a system or file system without unnamed files (its fallback, forced), and the same through
// an open folder (Dir: linked by descriptor where the process may, through /proc, or named).
func creators(t *testing.T) map[string]func(string) (*File, error) {
	t.Helper()
	noUnnamed := func(dir string) (*os.File, error) {
		return nil, &os.PathError{Op: "open", Path: dir, Err: errors.ErrUnsupported} // EOPNOTSUPP
	}
	inDir := func(set func(*Dir)) func(string) (*File, error) {
		return func(dir string) (*File, error) {
			d, err := OpenDir(dir)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { _ = d.Close() })
			if set != nil {
				set(d)
			}
			return d.Create()
		}
	}
	return map[string]func(string) (*File, error){
		"auto":      Create,
		"named":     createNamed,
		"fallback":  func(dir string) (*File, error) { return create(dir, noUnnamed) },
		"dir":       inDir(nil),
		"dir-proc":  inDir(func(d *Dir) { d.lk.noEmptyPath.Store(true) }),
		"dir-named": inDir(func(d *Dir) { d.noUnnamed.Store(true) }),
	}
}

// Create falls back to a temporary name where unnamed files fail, and the file shows under
// that name (IsTempName) until Commit.
func TestCreateFallback(t *testing.T) {
	dir := t.TempDir()
	f, err := creators(t)["fallback"](dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if f.Unnamed() {
		t.Fatal("the fallback file is unnamed")
	}
	if n := names(t, dir); len(n) != 1 || !IsTempName(n[0]) {
		t.Fatalf("folder holds %q, want one temporary name", n)
	}
}

// A committed file has its content under its name and nothing else is left in the folder; a
// file already there is replaced.
func TestCommit(t *testing.T) {
	for name, create := range creators(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "a.pdf")
			for _, content := range []string{"first", "second, replacing the first"} {
				f, err := create(dir)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteString(content); err != nil {
					t.Fatal(err)
				}
				if err := f.Commit(dst); err != nil {
					t.Fatal(err)
				}
				f.Abort() // after Commit: nothing
				got, err := os.ReadFile(dst)
				if err != nil || string(got) != content {
					t.Fatalf("read %s = %q, %v; want %q", dst, got, err, content)
				}
				if n := names(t, dir); !slices.Equal(n, []string{"a.pdf"}) {
					t.Fatalf("folder holds %q, want only a.pdf", n)
				}
			}
		})
	}
}

// An unnamed file is invisible until Commit (on Linux); Abort leaves nothing behind either way.
func TestAbort(t *testing.T) {
	for name, create := range creators(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			f, err := create(dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("partial"); err != nil {
				t.Fatal(err)
			}
			if (name == "auto" || strings.HasPrefix(name, "dir") && name != "dir-named") && runtime.GOOS == "linux" {
				if !f.Unnamed() {
					t.Log("this file system has no unnamed files: the temporary name is used")
				} else if n := names(t, dir); len(n) != 0 {
					t.Fatalf("an unnamed file shows in the folder: %q", n)
				}
			}
			f.Abort()
			if n := names(t, dir); len(n) != 0 {
				t.Fatalf("Abort left %q", n)
			}
		})
	}
}

// Commit refuses a destination outside the folder of Create, and discards the file.
func TestCommitOtherFolder(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	f, err := createNamed(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(filepath.Join(other, "a.pdf")); err == nil {
		t.Fatal("Commit into another folder succeeded")
	}
	if n := names(t, dir); len(n) != 0 {
		t.Fatalf("left %q", n)
	}
}

// A Dir creates files in its folder, refuses to name one elsewhere, and opens a file of the
// folder (a relative path) under its full name.
func TestDir(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	d, err := OpenDir(dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Path() != dir {
		t.Fatalf("Path() = %q, want %q", d.Path(), dir)
	}
	f, err := d.Create()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(filepath.Join(other, "a.pdf")); err == nil {
		t.Fatal("Commit into another folder succeeded")
	}
	if n := names(t, dir); len(n) != 0 {
		t.Fatalf("left %q", n)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sub", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "x", "b.pdf"), []byte("blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := d.Open(filepath.Join("sub", "x", "b.pdf"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if want := filepath.Join(dir, "sub", "x", "b.pdf"); r.Name() != want {
		t.Fatalf("Name() = %q, want %q", r.Name(), want)
	}
	if got, err := io.ReadAll(r); err != nil || string(got) != "blob" {
		t.Fatalf("read %q, %v; want \"blob\"", got, err)
	}
	if _, err := d.Open("missing.pdf"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open(missing) = %v, want os.ErrNotExist", err)
	}
}

// RemoveTemps removes exactly the names TempName makes.
func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	tmp := TempName(filepath.Join(dir, "x.pdf"))
	keep := []string{"x.pdf", ".x.pdf.tmp", ".x.pdf.0123456789ab.tmp.pdf", "y.0123456789ab.tmp"}
	for _, n := range append(slices.Clone(keep), filepath.Base(tmp)) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !IsTempName(filepath.Base(tmp)) {
		t.Fatalf("IsTempName(%q) = false", filepath.Base(tmp))
	}
	if n := RemoveTemps(dir); n != 1 {
		t.Fatalf("RemoveTemps removed %d files, want 1", n)
	}
	got := names(t, dir)
	slices.Sort(keep)
	if !slices.Equal(got, keep) {
		t.Fatalf("left %q, want %q", got, keep)
	}
}

// Dir.WriteFile puts exactly the data under the name, replacing a file already there, and
// leaves nothing else in the folder: unnamed files linked by descriptor, through /proc, or
// temporary names; a name with a folder in it is refused.
func TestDirWriteFile(t *testing.T) {
	for name, set := range map[string]func(*Dir){
		"dir":       nil,
		"dir-proc":  func(d *Dir) { d.lk.noEmptyPath.Store(true) },
		"dir-named": func(d *Dir) { d.noUnnamed.Store(true) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if set != nil {
				set(d)
			}
			for _, content := range []string{"first", "second, replacing the first", ""} {
				if err := d.WriteFile("a.pdf", []byte(content)); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(dir, "a.pdf"))
				if err != nil || string(got) != content {
					t.Fatalf("read a.pdf = %q, %v; want %q", got, err, content)
				}
				if n := names(t, dir); !slices.Equal(n, []string{"a.pdf"}) {
					t.Fatalf("folder holds %q, want only a.pdf", n)
				}
			}
			for _, bad := range []string{"", "sub/b.pdf", "../b.pdf"} {
				if err := d.WriteFile(bad, []byte("x")); err == nil {
					t.Fatalf("WriteFile(%q) succeeded", bad)
				}
			}
			if n := names(t, dir); !slices.Equal(n, []string{"a.pdf"}) {
				t.Fatalf("folder holds %q, want only a.pdf", n)
			}
		})
	}
}

// Dir.ReadFile reads a file shorter than the buffer whole, the buffer's worth of a longer one,
// and a missing file is os.ErrNotExist.
func TestDirReadFile(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	content := strings.Repeat("0123456789", 1000)
	if err := os.WriteFile(filepath.Join(dir, "sub", "b.pdf"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ buf, want, n int }{
		{len(content) + 1, len(content), len(content)}, // the recorded size: one byte to spare
		{len(content) + 1, 0, len(content)},
		{len(content), len(content), len(content)},
		{len(content) - 1, len(content) - 1, len(content) - 1}, // a longer file fills the buffer
		{2 * len(content), len(content) + 5, len(content)},     // a shorter file: read to its end
	} {
		buf := make([]byte, c.buf)
		n, err := d.ReadFile(filepath.Join("sub", "b.pdf"), buf, c.want)
		if err != nil || n != c.n || string(buf[:n]) != content[:n] {
			t.Fatalf("ReadFile(buf %d, want %d) = %d, %v; want %d bytes of the file", c.buf, c.want, n, err, c.n)
		}
	}
	if _, err := d.ReadFile("missing.pdf", make([]byte, 10), 5); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile(missing) = %v, want os.ErrNotExist", err)
	}
}

// createUnnamedOrSkip is CreateUnnamed in dir; the test is skipped where the file system has
// no unnamed files.
func createUnnamedOrSkip(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := CreateUnnamed(dir)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no unnamed files here:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// CreateUnnamed makes a read-write file with no name; a Linker names it by path, never over an
// existing file (os.ErrExist) nor into a missing folder (os.ErrNotExist), and a missing folder
// does not make it give up linking by descriptor; closed before, the file leaves nothing.
func TestCreateUnnamedAndLink(t *testing.T) {
	for name, proc := range map[string]bool{"descriptor": false, "proc": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var l Linker
			l.noEmptyPath.Store(proc)
			f := createUnnamedOrSkip(t, dir)
			defer f.Close()
			if _, err := f.WriteString("body"); err != nil {
				t.Fatal(err)
			}
			if n := names(t, dir); len(n) != 0 {
				t.Fatalf("folder holds %q before Link", n)
			}
			if err := l.Link(f, filepath.Join(dir, "sub", "a.pdf")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("Link into a missing folder = %v, want os.ErrNotExist", err)
			}
			if !proc && l.noEmptyPath.Load() && os.Geteuid() == 0 {
				t.Fatal("a missing folder made the Linker give up AT_EMPTY_PATH")
			}
			if err := os.WriteFile(filepath.Join(dir, "b.pdf"), []byte("other"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := l.Link(f, filepath.Join(dir, "b.pdf")); !errors.Is(err, os.ErrExist) {
				t.Fatalf("Link over a file = %v, want os.ErrExist", err)
			}
			if err := l.Link(f, filepath.Join(dir, "a.pdf")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "body" {
				t.Fatalf("ReadAt = %q, %v", buf, err)
			}
			if got, err := os.ReadFile(filepath.Join(dir, "a.pdf")); err != nil || string(got) != "body" {
				t.Fatalf("a.pdf = %q, %v", got, err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "b.pdf")); string(got) != "other" {
				t.Fatalf("b.pdf replaced: %q", got)
			}
			g, err := CreateUnnamed(dir)
			if err != nil {
				t.Fatal(err)
			}
			_ = g.Close()
			if n := names(t, dir); !slices.Equal(n, []string{"a.pdf", "b.pdf"}) {
				t.Fatalf("folder holds %q, want a.pdf b.pdf", n)
			}
		})
	}
}
