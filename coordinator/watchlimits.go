package coordinator

import (
	"context"
	"fmt"
	"net"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// watchAdmission bounds the WatchBatch streams per batch and per client address
// (Config.WatchersPerBatch, Config.WatchersPerPeer). It is admission control of streams, not
// domain state: handlers take a slot before registering with the loop and give it back when
// the stream ends.
type watchAdmission struct {
	perBatch, perPeer int

	mu      sync.Mutex
	batches map[string]int
	peers   map[string]int
}

func newWatchAdmission(perBatch, perPeer int) *watchAdmission {
	return &watchAdmission{perBatch: perBatch, perPeer: perPeer, batches: make(map[string]int), peers: make(map[string]int)}
}

// peerKey is the client address of ctx (its IP, without the port).
func peerKey(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	addr := p.Addr.String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// acquire takes a slot for a watcher of batchID from ctx's client, returning the function that
// gives it back, or RESOURCE_EXHAUSTED naming the limit.
func (a *watchAdmission) acquire(ctx context.Context, batchID string) (func(), error) {
	pk := peerKey(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	switch {
	case a.batches[batchID] >= a.perBatch:
		err = quotaError(fmt.Sprintf("batch %q already has %d watchers, the limit", batchID, a.perBatch), "batch:"+batchID)
	case a.peers[pk] >= a.perPeer:
		err = quotaError(fmt.Sprintf("this client already has %d watchers, the limit per client address", a.perPeer), "client:"+pk)
	}
	if err != nil {
		return nil, err
	}
	a.batches[batchID]++
	a.peers[pk]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.batches[batchID]--; a.batches[batchID] == 0 {
				delete(a.batches, batchID)
			}
			if a.peers[pk]--; a.peers[pk] == 0 {
				delete(a.peers, pk)
			}
		})
	}, nil
}

// quotaError is RESOURCE_EXHAUSTED with a QuotaFailure naming the exhausted quota.
func quotaError(msg, subject string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
		Subject: subject, Description: msg}}}); err == nil {
		st = d
	}
	return st.Err()
}
