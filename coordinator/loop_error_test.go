package coordinator

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// failingKV is a kvStore whose commits fail with err while armed.
type failingKV struct {
	kvStore
	armed atomic.Bool
	err   error
}

func (k *failingKV) update(fn func(kvTx) error) error {
	if k.armed.Load() {
		return k.err
	}
	return k.kvStore.update(fn)
}

// A failed commit stops Run with an error that wraps the store's, without naming the loop:
// the process names its parts ("coordinator loop: ..." in cmd/coordinator and embedded), so
// a prefix here was printed twice ("coordinator loop: coordinator loop: commit store: ...").
func TestCommitFailureStopsRunWithTheStoreError(t *testing.T) {
	boom := errors.New("disk on fire")
	fkv := &failingKV{err: boom}
	h := startHarnessWith(t, nil, func(c *Coordinator) {
		fkv.kvStore = c.st.kv
		c.st.kv = fkv
	})
	fkv.armed.Store(true)
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "a", Papers: specs("a", 1, 1)}); err == nil {
		t.Fatal("SubmitBatch succeeded with a failing store")
	}
	var err error
	select {
	case err = <-h.runDone:
	case <-ctx.Done():
		t.Fatal("Run did not stop after a failed commit")
	}
	h.runDone <- nil // for the harness's stop
	if !errors.Is(err, boom) {
		t.Fatalf("Run: %v, want it to wrap %v", err, boom)
	}
	if msg := err.Error(); msg != "commit store: disk on fire" || strings.Contains(msg, "coordinator loop") {
		t.Fatalf("Run: %q, want %q (the caller names the part)", msg, "commit store: disk on fire")
	}
}
