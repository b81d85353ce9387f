package coordinator

import (
	"slices"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// memKV is an in-memory kvStore for the tests: the engine, the store's encoding and commit
// and the reads run unchanged on it, without a file (TestPropertyStateMachineInMemory).
// It is single-goroutine, like the loop, and update is not atomic: a failing commit fails
// the test.
type memKV struct {
	buckets map[string]*memBucket
}

func newMemKV() *memKV { return &memKV{buckets: make(map[string]*memBucket)} }

func (s *memKV) view() (kvTx, func(), error) { return s, func() {}, nil }

func (s *memKV) update(fn func(kvTx) error) error { return fn(s) }

func (s *memKV) bucket(name string) kvBucket {
	b := s.buckets[name]
	if b == nil {
		b = &memBucket{m: make(map[string][]byte)}
		s.buckets[name] = b
	}
	return b
}

type memBucket struct {
	m map[string][]byte
}

func (b *memBucket) Get(k []byte) []byte { return b.m[string(k)] }

func (b *memBucket) Put(k, v []byte) error {
	b.m[string(k)] = append([]byte{}, v...)
	return nil
}

func (b *memBucket) Delete(k []byte) error {
	delete(b.m, string(k))
	return nil
}

func (b *memBucket) keys() []string {
	keys := make([]string, 0, len(b.m))
	for k := range b.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (b *memBucket) ForEach(fn func(k, v []byte) error) error {
	for _, k := range b.keys() {
		if err := fn([]byte(k), b.m[k]); err != nil {
			return err
		}
	}
	return nil
}

func (b *memBucket) last() []byte {
	var last string
	found := false
	for k := range b.m {
		if !found || k > last {
			last, found = k, true
		}
	}
	if !found {
		return nil
	}
	return []byte(last)
}

// The in-memory store behaves as the bbolt one: what one commits, the other reads back the same.
func TestMemKVMatchesBolt(t *testing.T) {
	for _, name := range []string{"bbolt", "memory"} {
		t.Run(name, func(t *testing.T) {
			var h *engHarness
			if name == "bbolt" {
				h = newEngHarness(t, nil)
			} else {
				h = newMemEngHarness(t, nil)
			}
			c := h.connect("f", 4)
			if res := h.submit("b", specs("p", 3, 3)); res.err != nil {
				t.Fatal(res.err)
			}
			as, _, _ := recv(c)
			if len(as) != 3 {
				t.Fatalf("%d assigns, want 3", len(as))
			}
			h.send(c, eventReq(as[0], 1, completedEv(as[0])))
			h.send(c, eventReq(as[1], 1, failedEv(pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_FOUND, 404, 0)))
			h.restart()
			b := h.batch("b")
			if got := b.counts[stateSucceeded]; got != 1 {
				t.Errorf("succeeded after restart: %d", got)
			}
			rec, _, err := h.st.readPaper(h.e.byBatch[batchKey(hashString(as[0].GetPaperId()), b.idx)])
			if err != nil || rec.sha256 != fakeSHA(as[0].GetPaperId()) {
				t.Errorf("read back: %+v, %v", rec, err)
			}
			if len(h.e.orphans) != 1 {
				t.Errorf("%d orphan leases after restart, want 1", len(h.e.orphans))
			}
		})
	}
}
