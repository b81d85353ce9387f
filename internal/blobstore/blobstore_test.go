package blobstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"gocloud.dev/blob"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestContentKey(t *testing.T) {
	h := strings.Repeat("ab", 32)
	if got, want := ContentKey(h), "sha256/ab/"+h+".pdf"; got != want {
		t.Fatalf("ContentKey = %q, want %q", got, want)
	}
	if got := ContentKey(strings.ToUpper(h)); got != "sha256/ab/"+h+".pdf" {
		t.Fatalf("upper case: %q", got)
	}
	for _, bad := range []string{"", "ab", strings.Repeat("g", 64), "../" + h[3:], h + "0"} {
		if got := ContentKey(bad); got != "" {
			t.Errorf("ContentKey(%q) = %q, want empty", bad, got)
		}
	}
}

func TestLocalPath(t *testing.T) {
	key := ContentKey(strings.Repeat("01", 32))
	for _, tc := range []struct {
		url, key, want string
		ok             bool
	}{
		{"file:///data/blobs", key, "/data/blobs/" + key, true},
		{"file://./rel/blobs", key, "rel/blobs/" + key, true},
		{"file://localhost/data", "a/b.pdf", "/data/a/b.pdf", true},
		{"file:///data?create_dir=1", "a.pdf", "/data/a.pdf", true},
		{"s3://bucket", key, "", false},
		{"file:///data", "../etc/passwd", "", false},
		{"file:///data", "/abs", "", false},
		{"file:///data", "a//b", "", false},
		{"file:///data", "a/./b", "", false},
		{"file:///data", "paper id with spaces", "", false},
		{"file:///data", "x\x00y", "", false},
		{"file:///data", "tmp" + TempSuffix, "", false},
		{"file://otherhost/data", key, "", false},
		// blob.OpenBucket's prefix parameter prefixes every key: a folder prefix is mapped,
		// another one, or a single key for every key, is not.
		{"file:///data?prefix=pf/", key, "/data/pf/" + key, true},
		{"file:///data?prefix=pf/sub/&create_dir=1", "a.pdf", "/data/pf/sub/a.pdf", true},
		{"file://./rel?prefix=pf/", "a.pdf", "rel/pf/a.pdf", true},
		{"file:///data?prefix=", "a.pdf", "", false},
		{"file:///data?prefix=pf", key, "", false},
		{"file:///data?prefix=../up/", key, "", false},
		{"file:///data?prefix=/abs/", key, "", false},
		{"file:///data?key=one.pdf", key, "", false},
		{"file:rel/data", key, "", false},
	} {
		got, ok := LocalPath(tc.url, tc.key)
		if ok != tc.ok || got != filepath.FromSlash(tc.want) {
			t.Errorf("LocalPath(%q, %q) = %q, %v; want %q, %v", tc.url, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

// TestLocalPathIsTheBlobStoresFile: for every file:// URL form LocalPath maps, the file it
// names is the one the blob store reads and writes for the key (and no file for a form it
// refuses).
func TestLocalPathIsTheBlobStoresFile(t *testing.T) {
	ctx := context.Background()
	key := ContentKey(strings.Repeat("5e", 32))
	for _, tail := range []string{"", "?prefix=pf/", "?prefix=pf/sub/", "?prefix=pf-", "?no_tmp_dir=1&prefix=x/"} {
		dir := t.TempDir()
		url := "file://" + filepath.ToSlash(dir) + tail
		b, err := blob.OpenBucket(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		body := []byte("%PDF-" + tail)
		err = b.WriteAll(ctx, key, body, nil)
		_ = b.Close()
		if err != nil {
			t.Fatal(err)
		}
		p, ok := LocalPath(url, key)
		if !ok {
			if tail != "?prefix=pf-" {
				t.Errorf("%s: not mapped", url)
			}
			continue
		}
		if got, err := os.ReadFile(p); err != nil || string(got) != string(body) {
			t.Errorf("%s: LocalPath %s holds %q (%v), the blob store wrote %q", url, p, got, err, body)
		}
	}
}

func TestOpenFileCommitAndHiddenTemp(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "new", "blobs")
	url := "file://" + dir
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("bucket folder not created: %v", err)
	}
	key := ContentKey(strings.Repeat("0a", 32))

	// A temp file in TempDir is invisible to List and cannot be read as a key.
	tmp := filepath.Join(TempDir(dir), "x.part"+TempSuffix)
	if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("%PDF-partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if keys := list(t, b); len(keys) != 0 {
		t.Fatalf("temp file listed: %v", keys)
	}
	if _, err := b.ReadAll(ctx, TempDirName+"/x.part"+TempSuffix); err == nil {
		t.Fatal("temp file readable as a key")
	}

	existed, err := CommitFile(dir, openFile(t, tmp), key)
	if err != nil || existed {
		t.Fatalf("CommitFile: %v %v", existed, err)
	}
	if got, err := b.ReadAll(ctx, key); err != nil || string(got) != "%PDF-partial" {
		t.Fatalf("read back %q %v", got, err)
	}
	if p, ok := LocalPath(url, key); !ok {
		t.Fatal("no local path")
	} else if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	// Committing identical content again keeps the object and drops the temp file.
	if err := os.WriteFile(tmp, []byte("%PDF-partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	existed, err = CommitFile(dir, openFile(t, tmp), key)
	if err != nil || !existed {
		t.Fatalf("second CommitFile: %v %v", existed, err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temp file left: %v", err)
	}
	if keys := list(t, b); len(keys) != 1 || keys[0] != key {
		t.Fatalf("keys %v", keys)
	}
	if err := os.WriteFile(tmp, []byte("%PDF-x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CommitFile(dir, openFile(t, tmp), "../escape"); err == nil {
		t.Fatal("unsafe key accepted")
	}
	// No metadata sidecars are written by writes through the bucket either.
	if err := b.WriteAll(ctx, "k.pdf", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "k.pdf.attrs")); !os.IsNotExist(err) {
		t.Fatalf("sidecar written: %v", err)
	}
}

func TestOpenRejectsUnknownScheme(t *testing.T) {
	if _, err := Open(context.Background(), "gs://bucket"); err == nil {
		t.Fatal("gs:// accepted")
	}
}

// TestOpenRejectsUnmappableFileURLs: a file:// URL whose objects LocalDir cannot name is
// refused: the fetchers would otherwise write its blobs through fileblob, which never fsyncs,
// and report them durable.
func TestOpenRejectsUnmappableFileURLs(t *testing.T) {
	dir := filepath.ToSlash(t.TempDir())
	for _, url := range []string{
		"file://otherhost" + dir,               // fileblob ignores the host
		"file:" + strings.TrimPrefix(dir, "/"), // no path: fileblob opens the working folder
		"file://" + dir + "?key=one.pdf",
		"file://" + dir + "?prefix=pf-",
	} {
		if b, err := Open(context.Background(), url); err == nil {
			_ = b.Close()
			t.Errorf("%s accepted", url)
		}
	}
	b, err := Open(context.Background(), "file://"+dir+"?prefix=pf/")
	if err != nil {
		t.Fatalf("a folder prefix: %v", err)
	}
	_ = b.Close()
}

func list(t *testing.T, b *blob.Bucket) []string {
	t.Helper()
	var keys []string
	it := b.List(nil)
	for {
		obj, err := it.Next(context.Background())
		if err == io.EOF {
			return keys
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, obj.Key)
	}
}

func openFile(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCommitterConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := Open(ctx, "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	c := NewCommitter(dir, SyncPerFile)
	if err := os.MkdirAll(TempDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 40
	errs := make(chan error, n)
	existed := make(chan bool, n)
	for i := range n {
		go func() {
			// Pairs of writers commit identical content: stored once.
			body := []byte("%PDF-" + strconv.Itoa(i/2))
			key := ContentKey(fmt.Sprintf("%064x", i/2))
			f, err := os.CreateTemp(TempDir(dir), "*"+TempSuffix)
			if err == nil {
				_, err = f.Write(body)
			}
			if err != nil {
				errs <- err
				return
			}
			ex, err := c.Commit(f, key)
			existed <- ex
			errs <- err
		}()
	}
	dups := 0
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if <-existed {
			dups++
		}
	}
	keys := list(t, b)
	if len(keys) != n/2 {
		t.Fatalf("%d keys, want %d", len(keys), n/2)
	}
	for i := range n / 2 {
		got, err := b.ReadAll(ctx, ContentKey(fmt.Sprintf("%064x", i)))
		if err != nil || string(got) != "%PDF-"+strconv.Itoa(i) {
			t.Fatalf("key %d: %q %v", i, got, err)
		}
	}
	if left, _ := os.ReadDir(TempDir(dir)); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	_ = dups // how many found the object already depends on timing
}

func TestS3OptionsApply(t *testing.T) {
	o := S3Options{Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", PathStyle: true}
	got, err := o.Apply("s3://papers?region=eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "s3://papers?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1&use_path_style=true"; got != want {
		t.Fatalf("Apply = %q, want %q", got, want)
	}
	if got, _ := o.Apply("file:///x"); got != "file:///x" {
		t.Fatalf("file URL changed: %q", got)
	}
}

func TestSafeKey(t *testing.T) {
	for key, want := range map[string]bool{
		"sha256/ab/" + strings.Repeat("ab", 32) + ".pdf": true,
		"a": true, "a/b": true, "A-_.9/x": true,
		"": false, "/a": false, "a/": false, "a//b": false, "a/./b": false, "a/../b": false, "..": false,
		"a b": false, "ä": false, "a/b" + TempSuffix: false, `a\b`: false,
	} {
		if got := safeKey(key); got != want {
			t.Errorf("safeKey(%q) = %v, want %v", key, got, want)
		}
	}
}
