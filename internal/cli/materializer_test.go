package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/paperfetch/paperfetch/internal/reflink"
)

// Where the file systems cannot clone, the first failed clone is remembered (the next copies
// do not try again: one failed ioctl per file saved), and every copy is still whole and verified.
// Where they can, every placement clones and nothing is remembered.
func TestWriteVerifiedRemembersNoClone(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("%PDF-1.7 clone or copy\n"), 5000)
	sum := sha256.Sum256(content)
	src := filepath.Join(dir, "blob")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	probe := func() error {
		in, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := os.Create(filepath.Join(dir, "probe"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		return reflink.Clone(out, in)
	}
	perr := probe()
	unsupported := errors.Is(perr, reflink.ErrUnsupported)
	if perr != nil && !unsupported {
		t.Fatalf("probe clone: %v", perr)
	}
	m := &materializer{}
	for i := range 3 {
		in, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, fmt.Sprintf("out%d.pdf", i))
		err = m.writeVerified(dst, in, hex.EncodeToString(sum[:]))
		_ = in.Close()
		if err != nil {
			t.Fatalf("place %d: %v", i, err)
		}
		if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("place %d: %d bytes, %v; want the blob's %d", i, len(got), err, len(content))
		}
		if m.noClone.Load() != unsupported {
			t.Fatalf("place %d: noClone %v where the file system's clone says %v", i, m.noClone.Load(), perr)
		}
	}
}
