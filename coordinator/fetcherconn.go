package coordinator

import (
	"sync"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// fetcherConn is one fetcher's Work stream as the loop sees it. The loop owns every field
// except out, done and the kill machinery, which connect it to the stream's writer.
type fetcherConn struct {
	// Set by the stream handler before the loop sees the conn; read-only afterwards.
	out chan *pb.WorkResponse // bounded buffer drained by the stream's writer
	// killed is closed when the loop breaks the stream (buffer full, replaced, protocol error).
	killed   chan struct{}
	killOnce sync.Once
	killErr  error
	// share holds a token per message of the stream waiting in the gateway inbox (budgets.go).
	share chan struct{}

	// subject is the credential the stream authenticated with ("" without auth).
	subject string

	// Owned by the loop.
	id        string
	boot      string
	slots     int
	credits   int
	draining  bool
	closed    bool
	connected time.Time
	lastMsg   time.Time // the stream's last message (FetcherSilence)
	leases    map[uint32]*lease
	// Prefetch (prefetch.go): the window (Hello.prefetch), the successors waiting in it (not
	// yet holding a host slot), and the leases that may get a successor (with stale entries).
	prefetch int
	waiting  int
	cands    []*lease
	// candsIdle: the last scan of cands found no host with queued papers, as of queueGen
	// idleGen (fillWindow).
	candsIdle bool
	idleGen   uint64
}

func newFetcherConn(buffer int) *fetcherConn {
	return &fetcherConn{
		out:    make(chan *pb.WorkResponse, buffer),
		killed: make(chan struct{}),
		leases: make(map[uint32]*lease),
	}
}

// send queues m for the writer without blocking; false means the buffer is full.
func (c *fetcherConn) send(m *pb.WorkResponse) bool {
	select {
	case c.out <- m:
		return true
	default:
		return false
	}
}

// kill asks the stream handler to end the stream with err. Safe from any goroutine; the
// first error wins.
func (c *fetcherConn) kill(err error) {
	c.killOnce.Do(func() {
		c.killErr = err
		close(c.killed)
	})
}
