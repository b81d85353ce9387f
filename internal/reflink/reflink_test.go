package reflink

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Clone either makes an independent copy (a later write to the clone leaves the source as it
// was) or says ErrUnsupported and leaves dst empty.
func TestClone(t *testing.T) {
	dir := t.TempDir()
	want := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	srcPath := filepath.Join(dir, "src")
	if err := os.WriteFile(srcPath, want, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	err = Clone(dst, src)
	if errors.Is(err, ErrUnsupported) {
		if st, _ := dst.Stat(); st.Size() != 0 {
			t.Fatalf("unsupported clone wrote %d bytes", st.Size())
		}
		t.Skipf("this file system cannot clone: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.WriteAt([]byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(srcPath)
	if !bytes.Equal(got, want) {
		t.Fatal("writing to the clone changed the source")
	}
}
