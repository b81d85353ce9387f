package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// Completions are believed only once verified: a fetcher's DownloadCompleted names a blob
// (the content-addressed key of its sha256, checked by the gateway's validation) and a size;
// the coordinator checks, off the loop, that the blob store holds that blob with that size
// before the paper becomes SUCCEEDED and the URL enters the cache. A completion that fails
// the check counts as a transient STORAGE failure of the attempt (the paper is retried, up to
// MaxAttempts): a missing or truncated blob is what a fetcher whose store write was lost would
// produce, and retrying is what fixes that case; a lying fetcher only burns the paper's attempts.
// Without a blob store (Config.Bucket nil) completions are believed as reported.

// verifyTimeout bounds one blob store check.
const verifyTimeout = 30 * time.Second

// verifyJob asks a verifier to check one completion.
type verifyJob struct {
	l    *lease
	key  string
	size int64
}

// verifiedMsg is a verifier's answer, applied by the loop.
type verifiedMsg struct {
	job verifyJob
	err error // nil: the blob exists with the reported size
}

func (m *verifiedMsg) apply(e *engine, now time.Time) { e.onVerified(m.job, m.err, now) }

// errNotVerified marks completions the blob store contradicts.
var errNotVerified = fmt.Errorf("completion not verified")

// verifyBlob checks that key exists in bucket with size bytes: with a stat(2) of its file when
// bucketURL names a local folder, through the blob store's API otherwise.
func verifyBlob(ctx context.Context, bucket *blob.Bucket, bucketURL, key string, size int64) error {
	if path, ok := blobstore.LocalPath(bucketURL, key); ok {
		return statBlob(path, key, size)
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	attrs, err := bucket.Attributes(ctx, key)
	switch {
	case gcerrors.Code(err) == gcerrors.NotFound:
		return notInStore(key)
	case err != nil:
		return fmt.Errorf("%w: blob %s: %w", errNotVerified, key, err)
	}
	return sizeMatches(key, attrs.Size, size)
}

// statBlob checks with a stat(2) that path, the local file of blob key, is a regular file of
// size bytes.
func statBlob(path, key string, size int64) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return notInStore(key)
	case err != nil:
		return fmt.Errorf("%w: blob %s: %w", errNotVerified, key, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%w: blob %s is not a regular file", errNotVerified, key)
	}
	return sizeMatches(key, st.Size(), size)
}

func sizeMatches(key string, got, size int64) error {
	if got != size {
		return fmt.Errorf("%w: blob %s has %d bytes, the fetcher reported %d", errNotVerified, key, got, size)
	}
	return nil
}

// blobCheck is the verdict on one completion, found by the Work stream's receiver before the
// loop sees the event (checkCompletions); done is false for a completion left to the verifiers.
type blobCheck struct {
	done bool
	err  error // nil: the blob exists with the reported size
}

// checkCompletions checks the completions of req (validated) against a local blob store, on
// the stream's receiver goroutine, so that the loop applies them at once (startVerify) instead
// of handing each to a verifier and applying its answer in a later message: a stat(2) per
// completion costs no more there, and a completion then crosses one goroutine (the loop)
// instead of three. The verdicts are indexed as the events (0: req.event, i+1:
// req.more_events[i]); nil when req has no completion to check here (no blob store, one that
// is not a local folder, or a key LocalPath refuses: those go to the verifiers).
func (c *Coordinator) checkCompletions(req *pb.WorkRequest) []blobCheck {
	if c.blobDir == "" {
		return nil
	}
	var checks []blobCheck
	check := func(i int, ev *pb.DownloadEvent) {
		d := ev.GetCompleted()
		if d == nil {
			return
		}
		path, ok := blobstore.KeyPath(c.blobDir, d.GetBlobKey())
		if !ok {
			return
		}
		if checks == nil {
			checks = make([]blobCheck, 1+len(req.GetMoreEvents()))
		}
		checks[i] = blobCheck{done: true, err: statBlob(path, d.GetBlobKey(), d.GetSize())}
	}
	check(0, req.GetEvent())
	for i, ev := range req.GetMoreEvents() {
		check(i+1, ev)
	}
	return checks
}

func notInStore(key string) error {
	return fmt.Errorf("%w: blob %s is not in the coordinator's blob store (is --blob the fetchers' store?)", errNotVerified, key)
}

// runVerifiers starts n verifier goroutines reading jobs until ctx is done; the returned
// function waits for them.
func (c *Coordinator) runVerifiers(ctx context.Context, n int) (wait func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-c.verifyJobs:
					err := verifyBlob(ctx, c.cfg.Bucket, c.cfg.BucketURL, j.key, j.size)
					if ctx.Err() != nil {
						return
					}
					if c.postWait(ctx, &verifiedMsg{job: j, err: err}) != nil {
						return
					}
				}
			}
		})
	}
	return wg.Wait
}

// startVerify parks a completion of l until a verifier checked it; the Ack waits too. A
// completion the stream's receiver already checked (chk done: checkCompletions) is applied at
// once, as the verifier's answer would be.
func (e *engine) startVerify(l *lease, d *pb.DownloadCompleted, seq int64, chk blobCheck, now time.Time) {
	l.verifying = true
	l.completion = d
	l.ackSeq = seq
	j := verifyJob{l: l, key: d.GetBlobKey(), size: d.GetSize()}
	if chk.done {
		e.onVerified(j, chk.err, now)
		return
	}
	e.verifyOut = append(e.verifyOut, j)
}

// onVerified applies a verifier's answer: the paper SUCCEEDED, or the attempt failed.
func (e *engine) onVerified(j verifyJob, err error, now time.Time) {
	l := j.l
	if e.leases[l.idx] != l || !l.verifying {
		return // the lease ended meanwhile (its stream broke, its batch was cancelled)
	}
	l.verifying = false
	c := l.conn
	if err == nil && e.blobCollected(j.key, l.assignedAt) {
		err = fmt.Errorf("%w: blob %s was released by a deleted batch and is being removed; the paper will be downloaded again", errNotVerified, j.key)
	}
	if err == nil {
		e.m.verifiedOK.Inc()
		e.blobRepaired(j.key)
		e.complete(l, l.completion, now)
	} else {
		e.m.verifiedRefused.Inc()
		e.log.Warn("completion refused", "fetcher", connID(c), "lease", l.name(), "paper", l.paperID, "err", err)
		e.fail(l, &pb.DownloadFailed{
			Class: pb.FailureClass_FAILURE_CLASS_TRANSIENT, Reason: pb.FailureReason_FAILURE_REASON_STORAGE,
			Message: err.Error(),
		}, now)
	}
	e.ack(c, l.id, l.ackSeq)
	l.completion = nil
}

func connID(c *fetcherConn) string {
	if c == nil {
		return ""
	}
	return c.id
}
