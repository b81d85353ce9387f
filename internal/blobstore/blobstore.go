// Package blobstore opens the blob store that holds downloaded PDFs and names the objects in
// it. Objects are content-addressed: the key of a PDF is derived from its SHA-256 only, so user
// input (paper ids, URLs) never becomes a path and identical content is stored once.
//
// Two kinds of bucket URL are supported:
//
//   - file:///abs/dir or file://./rel/dir: a local folder (gocloud.dev/blob/fileblob); a
//     prefix=sub/ parameter puts the objects in its folder sub. The folder is created when
//     missing and no metadata sidecar files are written. fileblob itself
//     never fsyncs; writers that need durability (the fetcher) write the file themselves
//     through LocalDir/LocalPath and sync the file and its directory before reporting success.
//   - s3://bucket?endpoint=...&region=...&use_path_style=true: any S3-compatible store
//     (gocloud.dev/blob/s3blob). Credentials come from the usual AWS environment.
package blobstore

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/s3blob" // registers the s3:// scheme
)

// TempSuffix ends the names of the temporary and partial files writers keep inside a file://
// bucket's folder. fileblob hides every file with this suffix from List and refuses it as a
// key, so a partially written object is never visible.
const TempSuffix = ".attrs"

// TempDirName is the folder, directly under a file:// bucket's root, where writers keep their
// temporary and partial files (each named with TempSuffix).
const TempDirName = ".paperfetch-tmp"

// Open opens the bucket at rawURL (file:// or s3://). For file:// URLs the folder is created
// if missing and metadata sidecars are disabled, unless the URL says otherwise; a file:// URL
// whose folder LocalDir cannot name is refused.
func Open(ctx context.Context, rawURL string) (*blob.Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("blob URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if _, ok := LocalDir(rawURL); !ok {
			// Writers could not commit its files themselves, and fileblob syncs no folder.
			return nil, fmt.Errorf("blob URL %q: a file:// URL names a local folder: file:///abs/dir or file://./rel/dir, with no other host, optionally prefix=sub/ (a folder), no key parameter", redact(u))
		}
		q := u.Query()
		if _, ok := q["create_dir"]; !ok {
			q.Set("create_dir", "1")
		}
		if _, ok := q["metadata"]; !ok {
			q.Set("metadata", string(fileblob.MetadataDontWrite))
		}
		u.RawQuery = q.Encode()
	case "s3":
	default:
		return nil, fmt.Errorf("blob URL %q: unsupported scheme %q (want file or s3)", rawURL, u.Scheme)
	}
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("open blob store %q: %w", redact(u), err)
	}
	return b, nil
}

// ContentKey returns the blob key of the content whose lowercase hex SHA-256 is sha256hex:
// "sha256/<first two hex digits>/<sha256hex>.pdf". Upper-case input is lowercased; anything
// that is not 64 hex digits yields "" (callers must treat that as an error).
func ContentKey(sha256hex string) string {
	h := strings.ToLower(sha256hex) // no copy when already lowercase
	if len(h) != 64 {
		return ""
	}
	for i := range len(h) {
		if c := h[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	// A loop, not a regular expression: it was 0.4% of `paperfetch get`'s CPU.
	return "sha256/" + h[:2] + "/" + h + ".pdf"
}

// LocalDir returns the folder that holds the objects of a file:// bucket URL, as the blob
// store maps it: the URL's path (relative for file://./dir), below the folder named by a
// prefix parameter (blob.OpenBucket's, which prefixes every key: "pf/" is the folder pf). It
// returns false for other URLs and for the file:// URLs whose objects it cannot name: a host
// other than localhost (fileblob ignores it), no path, a prefix that is not a folder of plain
// segments ending in "/" (an empty one too, which blob.OpenBucket ignores), or a key
// parameter (one object for every key).
func LocalDir(bucketURL string) (string, bool) {
	u, err := url.Parse(bucketURL)
	if err != nil || u.Scheme != "file" {
		return "", false
	}
	p := u.Path
	if u.Host == "." {
		p = strings.TrimPrefix(p, "/")
	} else if u.Host != "" && u.Host != "localhost" {
		return "", false
	}
	if p == "" {
		return "", false
	}
	dir := filepath.FromSlash(p)
	q := u.Query()
	if q.Has("key") {
		return "", false
	}
	if q.Has("prefix") {
		folder, ok := strings.CutSuffix(q.Get("prefix"), "/")
		if !ok || !safeKey(folder) {
			return "", false
		}
		dir = filepath.Join(dir, filepath.FromSlash(folder))
	}
	return dir, true
}

// LocalPath returns the file that holds key in a file:// bucket, and false for other URLs or
// for keys that are not plain relative paths (only keys that fileblob stores unescaped, such
// as those of ContentKey, are mapped).
func LocalPath(bucketURL, key string) (string, bool) {
	dir, ok := LocalDir(bucketURL)
	if !ok {
		return "", false
	}
	return KeyPath(dir, key)
}

// KeyPath returns the file that holds key in the local bucket folder dir (as LocalDir names
// it), and false for the keys LocalPath refuses. A caller holding dir parses no URL per key.
func KeyPath(dir, key string) (string, bool) {
	if !safeKey(key) {
		return "", false
	}
	return filepath.Join(dir, filepath.FromSlash(key)), true
}

// safeKey reports whether key is a relative slash path of plain segments that fileblob maps
// to a file without escaping.
func safeKey(key string) bool {
	if key == "" || strings.HasSuffix(key, TempSuffix) {
		return false
	}
	for rest := key; ; { // segment by segment, without allocating (once per commit)
		seg, after, more := strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := range len(seg) {
			c := seg[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
		if !more {
			return true
		}
		rest = after
	}
}

// redact returns u without its query (which may carry secrets such as an access key).
func redact(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}
