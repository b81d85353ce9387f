package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// The overview stream. Every open overview page needs the same three reads (the newest batches,
// the busy hosts, the fetchers); one reader per page would cost the coordinator's loop three
// calls per second per page. Instead the pages that present the same Authorization header
// share one feed: a goroutine that reads every OverviewInterval while at least one of them is
// open and hands each change, marshalled once, to all of them. A page joins only after its own
// first read succeeded (so a wrong token is refused with 401 and starts nothing); the feed
// stops with its last page, or at its first failed read (a revoked token, a stopping
// coordinator), which ends its pages with an "error" event.

// overview is one read of what the overview page shows.
type overview struct {
	batches  *pb.ListBatchesResponse
	hosts    *pb.ListHostsResponse
	fetchers *pb.ListFetchersResponse
}

func (h *handler) readOverview(ctx context.Context) (overview, error) {
	var o overview
	var err error
	if o.batches, err = h.client.ListBatches(ctx, &pb.ListBatchesRequest{PageSize: overviewBatches}); err != nil {
		return o, err
	}
	if o.hosts, err = h.client.ListHosts(ctx, &pb.ListHostsRequest{PageSize: overviewHosts, BusyOnly: true}); err != nil {
		return o, err
	}
	o.fetchers, err = h.client.ListFetchers(ctx, &pb.ListFetchersRequest{})
	return o, err
}

func (o overview) equal(p overview) bool {
	return proto.Equal(o.batches, p.batches) && proto.Equal(o.hosts, p.hosts) && proto.Equal(o.fetchers, p.fetchers)
}

func (o overview) marshal() ([]byte, error) {
	var buf bytes.Buffer
	for i, part := range []struct {
		name string
		m    proto.Message
	}{{"batches", o.batches}, {"hosts", o.hosts}, {"fetchers", o.fetchers}} {
		js, err := eventJSON.Marshal(part.m)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			buf.WriteString("{")
		} else {
			buf.WriteString(",")
		}
		fmt.Fprintf(&buf, "%q:%s", part.name, js)
	}
	buf.WriteString("}")
	return buf.Bytes(), nil
}

// overviewMsg is what a feed hands its pages: an overview event's JSON, or the error that
// ended the feed.
type overviewMsg struct {
	js  []byte
	err error
}

// MaxOverviewStreamsPerClient bounds the overview streams one client address (its host, any
// port) holds open at once; one more is refused with 429 (RESOURCE_EXHAUSTED). A stream costs
// the coordinator one read only (then the shared feed serves it), so the coordinator's own
// per-client limits do not bound them. Like coordinator.DefaultWatchersPerPeer for batch pages.
const MaxOverviewStreamsPerClient = 32

// overviewFeeds are the running feeds, by Authorization header, and the overview streams open
// per client host.
type overviewFeeds struct {
	mu      sync.Mutex
	feeds   map[string]*overviewFeed
	clients map[string]int // client host -> overview streams open (entries > 0 only)
}

// admit counts one more overview stream of the client at remoteAddr, and returns the function
// that uncounts it; false when the client already holds MaxOverviewStreamsPerClient.
func (fs *overviewFeeds) admit(remoteAddr string) (func(), bool) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.clients[host] >= MaxOverviewStreamsPerClient {
		return nil, false
	}
	fs.clients[host]++
	return func() {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if fs.clients[host]--; fs.clients[host] <= 0 {
			delete(fs.clients, host)
		}
	}, true
}

// overviewFeed is one shared reader and its pages.
type overviewFeed struct {
	auth   string
	cancel context.CancelFunc
	done   chan struct{}             // closed when the feed's goroutine returns
	pages  map[chan overviewMsg]bool // each holds at most the latest message (under overviewFeeds.mu)
}

// join adds a page to the feed of auth, starting the feed (its ticker armed before join
// returns) when there is none; last is the overview the page has. It returns the page's
// channel and the function that removes the page, which stops the feed with its last page.
func (h *handler) join(auth string, last overview) (<-chan overviewMsg, func()) {
	fs := &h.feeds
	page := make(chan overviewMsg, 1)
	fs.mu.Lock()
	f := fs.feeds[auth]
	if f == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f = &overviewFeed{auth: auth, cancel: cancel, done: make(chan struct{}), pages: make(map[chan overviewMsg]bool)}
		fs.feeds[auth] = f
		ticker := h.cfg.Clock.NewTicker(h.cfg.OverviewInterval)
		go func() {
			defer close(f.done)
			defer cancel()
			defer ticker.Stop()
			h.runFeed(ctx, f, ticker.C(), last)
		}()
	}
	f.pages[page] = true
	fs.mu.Unlock()
	return page, func() {
		fs.mu.Lock()
		delete(f.pages, page)
		stop := len(f.pages) == 0 && fs.feeds[auth] == f
		if stop {
			delete(fs.feeds, auth)
		}
		fs.mu.Unlock()
		if stop {
			f.cancel()
			<-f.done
		}
	}
}

// runFeed reads the overview at every tick and hands each change to the feed's pages, until
// ctx ends or a read fails (then the pages get the error and the feed is forgotten, so that
// the next page starts a new one).
func (h *handler) runFeed(ctx context.Context, f *overviewFeed, tick <-chan time.Time, last overview) {
	callCtx := ctx
	if f.auth != "" {
		callCtx = metadata.AppendToOutgoingContext(ctx, "authorization", f.auth)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		rctx, cancel := context.WithTimeout(callCtx, CallTimeout)
		cur, err := h.readOverview(rctx)
		cancel()
		var msg overviewMsg
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			msg.err = err
		case cur.equal(last):
			continue
		default:
			msg.js, msg.err = cur.marshal()
			last = cur
		}
		h.feeds.mu.Lock()
		if msg.err != nil && h.feeds.feeds[f.auth] == f {
			delete(h.feeds.feeds, f.auth)
		}
		for page := range f.pages {
			select { // only this goroutine sends: after the drain the send cannot block
			case <-page:
			default:
			}
			page <- msg
		}
		h.feeds.mu.Unlock()
		if msg.err != nil {
			return
		}
	}
}

// overviewEvents serves an overview page's stream (at most MaxOverviewStreamsPerClient per
// client): its own first read (errors are HTTP
// statuses), then the changes its feed reads, and a keep-alive comment when nothing changed
// for keepaliveTicks intervals.
func (h *handler) overviewEvents(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	release, ok := h.feeds.admit(r.RemoteAddr)
	if !ok {
		h.writeError(ctx, w, r, status.Errorf(codes.ResourceExhausted, "this client already holds %d overview streams", MaxOverviewStreamsPerClient))
		return
	}
	defer release()
	rctx, cancel := context.WithTimeout(ctx, CallTimeout)
	cur, err := h.readOverview(rctx)
	cancel()
	if err != nil {
		h.writeError(ctx, w, r, err)
		return
	}
	js, err := cur.marshal()
	if err != nil {
		h.writeError(ctx, w, r, err)
		return
	}
	page, leave := h.join(r.Header.Get("Authorization"), cur)
	defer leave()
	s := startSSE(w)
	if s.send("overview", js) != nil {
		return
	}
	keepalive := h.cfg.Clock.NewTicker(keepaliveTicks * h.cfg.OverviewInterval)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C():
			if s.comment("keep-alive") != nil {
				return
			}
		case m := <-page:
			if m.err != nil {
				if ctx.Err() == nil {
					s.sendStatus(m.err)
				}
				return
			}
			if bytes.Equal(m.js, js) {
				continue
			}
			js = m.js
			if s.send("overview", js) != nil {
				return
			}
		}
	}
}
