package fetcher

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"

	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// uploadFailTimeout bounds the clean-up (AbortMultipartUpload) of a failed or cancelled S3
// upload, which the transfer manager runs on a fresh context when this is set.
const uploadFailTimeout = 30 * time.Second

// store commits finished downloads to the blob store under content-addressed keys.
type store struct {
	bucket    *blob.Bucket
	localDir  string // root folder of a file:// bucket, or ""
	committer *blobstore.Committer
	s3        *s3.Client // set for s3blob buckets
}

func newStore(bucket *blob.Bucket, blobURL string, shared *blobstore.Committer, mode blobstore.SyncMode, opts blobstore.CommitterOptions) *store {
	st := &store{bucket: bucket}
	if dir, ok := blobstore.LocalDir(blobURL); ok {
		st.localDir = dir
		st.committer = shared
		if st.committer == nil || st.committer.Dir() != dir {
			st.committer = blobstore.NewCommitterWith(dir, mode, opts)
		}
	}
	var c *s3.Client
	if bucket.As(&c) {
		st.s3 = c
	}
	return st
}

// unnamedSpool reports whether spool files should be unnamed where the file system allows: not
// for a file:// bucket committed per file (blobstore.SyncPerFile), where a commit of an unnamed
// file fsyncs its inode after the link (its link count went 0 -> 1; a rename needs no such
// write): 0.4 more block requests per 20 KiB file (bench/ANALYSIS.md, "Unnamed spool files").
// A group commit's second syncfs writes it with the names.
func (st *store) unnamedSpool() bool {
	return st.committer == nil || st.committer.Mode() != blobstore.SyncPerFile
}

// spoolDir returns where downloads are spooled: inside the bucket for file:// buckets (so a
// commit is a rename), else configured.
func (st *store) spoolDir(configured string) string {
	if st.localDir != "" {
		return blobstore.TempDir(st.localDir)
	}
	if configured != "" {
		return configured
	}
	return filepath.Join(os.TempDir(), "paperfetch-spool")
}

// commit stores the finished spool file under key. The object is durable when commit returns:
// synced and renamed into place for file:// buckets, the PUT (or multipart completion)
// acknowledged otherwise. Identical content is stored once: an existing key is not rewritten.
// The spool file is gone afterwards, whatever the outcome.
func (st *store) commit(ctx context.Context, sf *spoolFile, key string) error {
	defer sf.finish()
	if st.localDir != "" {
		commit := st.committer.CommitSized
		if sf.unnamed {
			commit = st.committer.CommitUnnamed // linked into place: it has no name to rename
		}
		if _, err := commit(sf.takeFile(), key, sf.size); err != nil {
			return fmt.Errorf("commit %s: %w", key, err)
		}
		sf.committed = true // renamed or linked into place (or removed as a duplicate)
		return nil
	}
	if ok, err := st.bucket.Exists(ctx, key); err == nil && ok {
		return nil
	}
	if sf.unnamed {
		// No name to open it by: uploaded from the open file (read at offsets, from the
		// first byte; spool files are opened for reading and writing).
		return st.upload(ctx, key, io.NewSectionReader(sf.f, 0, sf.size))
	}
	if err := sf.closeFile(); err != nil {
		return err
	}
	f, err := os.Open(sf.path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	defer func() { _ = f.Close() }()
	return st.upload(ctx, key, f)
}

// upload writes r under key. On failure or cancellation nothing is left: the write is aborted
// and (for S3) the multipart upload is aborted on a fresh context.
func (st *store) upload(ctx context.Context, key string, r io.Reader) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var localTmp *os.File // fileblob's temporary file, synced before the rename
	opts := &blob.WriterOptions{ContentType: "application/pdf", BeforeWrite: func(as func(any) bool) error {
		if as(&localTmp) {
			return nil
		}
		return st.beforeWrite(as)
	}}
	w, err := st.bucket.NewWriter(wctx, key, opts)
	if err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		_ = w.Close()
		return fmt.Errorf("upload %s: %w", key, err)
	}
	if localTmp != nil {
		if err := localTmp.Sync(); err != nil {
			cancel()
			_ = w.Close()
			return fmt.Errorf("upload %s: sync: %w", key, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	return nil
}

// beforeWrite gives the S3 transfer manager a FailTimeout, so that a cancelled multipart upload
// is aborted (its parts deleted) instead of being left behind: s3blob builds the client without
// one and the abort would run on the already-cancelled context.
func (st *store) beforeWrite(as func(any) bool) error {
	if st.s3 == nil {
		return nil
	}
	var tm *transfermanager.Client
	if !as(&tm) || tm == nil {
		return nil
	}
	calc := st.s3.Options().RequestChecksumCalculation
	*tm = *transfermanager.New(st.s3, func(o *transfermanager.Options) {
		o.RequestChecksumCalculation = calc
		o.FailTimeout = uploadFailTimeout
	})
	return nil
}
