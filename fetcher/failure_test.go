package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"syscall"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// A host name that does not exist is NO_SUCH_HOST (the coordinator retries it once), not a
// CONNECTION failure retried like an overload.
func TestNoSuchHost(t *testing.T) {
	tf := newTestFetcher(t, func(c *Config) {
		c.LookupIP = func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no such host") }
	})
	_, fail, _ := tf.run(t, "http://nonexistent.invalid/x.pdf", nil)
	wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_NO_SUCH_HOST)
}

// A full, over-quota or read-only store is STORAGE_FULL; other storage errors stay STORAGE.
func TestStorageFailure(t *testing.T) {
	for errno, want := range map[syscall.Errno]pb.FailureReason{
		syscall.ENOSPC: pb.FailureReason_FAILURE_REASON_STORAGE_FULL,
		syscall.EDQUOT: pb.FailureReason_FAILURE_REASON_STORAGE_FULL,
		syscall.EROFS:  pb.FailureReason_FAILURE_REASON_STORAGE_FULL,
		syscall.EIO:    pb.FailureReason_FAILURE_REASON_STORAGE,
	} {
		f := storageFailure(fmt.Errorf("spool: %w", &fs.PathError{Op: "write", Path: "/s", Err: errno}))
		if f.reason != want || f.class != pb.FailureClass_FAILURE_CLASS_TRANSIENT {
			t.Errorf("%v: %v/%v, want %v", errno, f.class, f.reason, want)
		}
	}
}
