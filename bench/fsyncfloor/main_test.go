package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestSyncExisting checks that -existing visits every regular file directly in the folder,
// once, skipping subfolders and symbolic links, and hashes each file's whole content.
func TestSyncExisting(t *testing.T) {
	dir := t.TempDir()
	var want [sha256.Size]byte
	var bytes int64
	const files = 37
	for i := range files {
		// Sizes around the 64 KiB copy buffer, so some files take several reads.
		content := make([]byte, i*4099)
		for j := range content {
			content[j] = byte(i + j*13)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("p%02d.pdf", i)), content, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(content)
		for k := range want {
			want[k] ^= sum[k]
		}
		bytes += int64(len(content))
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "inner.pdf"), []byte("not directly in dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("p01.pdf", filepath.Join(dir, "link.pdf")); err != nil {
		t.Fatal(err)
	}

	got, err := syncExisting(dir, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	if got.files != files || got.hashed != bytes || got.digest != want {
		t.Errorf("with -hash: %d files, %d bytes, digest %x; want %d, %d, %x", got.files, got.hashed, got.digest, files, bytes, want)
	}

	got, err = syncExisting(dir, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if got.files != files || got.hashed != 0 || got.digest != ([sha256.Size]byte{}) {
		t.Errorf("without -hash: %d files, %d bytes, digest %x; want %d files, nothing hashed", got.files, got.hashed, got.digest, files)
	}
}

// TestSyncExistingErrors checks that a missing folder or no workers is an error, not an empty run.
func TestSyncExistingErrors(t *testing.T) {
	if _, err := syncExisting(filepath.Join(t.TempDir(), "missing"), 4, true); err == nil {
		t.Error("missing folder: no error")
	}
	if _, err := syncExisting(t.TempDir(), 0, true); err == nil {
		t.Error("-concurrency 0: no error")
	}
	if _, err := syncExisting("", 4, true); err == nil {
		t.Error("no -dir: no error")
	}
}
