package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// eventJSON marshals event payloads like the gateway does: every field present.
var eventJSON = protojson.MarshalOptions{EmitUnpopulated: true}

// Bounds of the event streams.
const (
	// maxEventPapers bounds the paper updates of one "batch" event; past it the event says
	// truncated and the page re-reads the papers it shows.
	maxEventPapers = 500
	// maxEventActive bounds the running downloads of one "batch" event.
	maxEventActive = 200
	// overviewBatches and overviewHosts bound the lists of an "overview" event (the newest
	// batches, the busy hosts); the page reads further pages from /v1/.
	overviewBatches = 50
	overviewHosts   = 200
	// keepaliveTicks is how many quiet overview ticks pass before a keep-alive comment.
	keepaliveTicks = 15
)

// events serves the page's live updates as server-sent events (text/event-stream). The page
// reads it with fetch(), since EventSource cannot send an Authorization header.
//
// With ?batch=ID it relays the coordinator's WatchBatch stream (include_papers): one "batch"
// event per coalesced update, {"update": WatchBatchResponse, "truncated": bool}, then "end"
// when the batch is terminal. Without it, "overview" events carry {"batches":
// ListBatchesResponse, "hosts": ListHostsResponse, "fetchers": ListFetchersResponse}, read every
// OverviewInterval by a reader shared by the pages with the same token (overview.go) and sent
// only when they changed. A failure before the stream starts is an
// HTTP error (401, 404...); after, an "error" event with the gRPC status as JSON.
func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), StreamTimeout)
	defer cancel()
	ctx = outgoing(ctx, r)
	if id := r.URL.Query().Get("batch"); id != "" {
		h.batchEvents(ctx, w, r, id)
		return
	}
	h.overviewEvents(ctx, w, r)
}

// sse writes events and flushes each.
type sse struct {
	w http.ResponseWriter
	f *http.ResponseController
}

func startSSE(w http.ResponseWriter) *sse {
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, f: http.NewResponseController(w)}
}

// send writes one event; data must not hold a newline (compact JSON does not).
func (s *sse) send(event string, data []byte) error {
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	return s.f.Flush()
}

func (s *sse) comment(text string) error {
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		return err
	}
	return s.f.Flush()
}

// sendStatus reports a failed stream as an "error" event.
func (s *sse) sendStatus(err error) {
	st, _ := status.FromError(err)
	js, merr := protojson.Marshal(st.Proto())
	if merr != nil {
		js = []byte(`{"message":"internal error"}`)
	}
	_ = s.send("error", js)
}

// firstMessage opens a server stream and reads its first message; a failure of either is
// answered as an HTTP error (nothing has been written yet) and gives ok = false.
func firstMessage[T any](ctx context.Context, h *handler, w http.ResponseWriter, r *http.Request,
	open func() (grpc.ServerStreamingClient[T], error)) (grpc.ServerStreamingClient[T], *T, bool) {
	stream, err := open()
	if err != nil {
		h.writeError(ctx, w, r, err)
		return nil, nil, false
	}
	first, err := stream.Recv()
	if err != nil {
		h.writeError(ctx, w, r, err)
		return nil, nil, false
	}
	return stream, first, true
}

func (h *handler) batchEvents(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) {
	stream, first, ok := firstMessage(ctx, h, w, r, func() (grpc.ServerStreamingClient[pb.WatchBatchResponse], error) {
		return h.client.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: id, IncludePapers: true})
	})
	if !ok {
		return
	}
	s := startSSE(w)
	recv := func() (*pb.WatchBatchResponse, error) {
		if first != nil {
			m := first
			first = nil
			return m, nil
		}
		return stream.Recv()
	}
	for {
		m, truncated, err := joinParts(recv)
		if errors.Is(err, io.EOF) {
			_ = s.send("end", []byte("{}"))
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				s.sendStatus(err)
			}
			return
		}
		if len(m.GetActive()) > maxEventActive {
			m.Active = m.Active[:maxEventActive]
		}
		js, err := eventJSON.Marshal(m)
		if err != nil {
			s.sendStatus(err)
			return
		}
		if s.send("batch", []byte(`{"truncated":`+strconv.FormatBool(truncated)+`,"update":`+string(js)+`}`)) != nil {
			return // the client went away
		}
	}
}

// joinParts reads the parts of one WatchBatch update (more = true on all but the last, which
// alone carries the batch) and joins them into one message: the page gets one event per update,
// always with the batch, and at most maxEventPapers paper updates (truncated says some were
// left out; the page then re-reads the papers it shows). A coordinator splits an update of
// 100,000 changed papers into about 30 parts; relayed one by one they were 3 MiB of events that
// mostly carried no batch.
func joinParts(recv func() (*pb.WatchBatchResponse, error)) (*pb.WatchBatchResponse, bool, error) {
	var joined *pb.WatchBatchResponse
	truncated := false
	for {
		m, err := recv()
		if err != nil {
			if joined != nil && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the stream ended inside an update
			}
			return nil, false, err
		}
		if joined == nil {
			joined = &pb.WatchBatchResponse{Snapshot: m.GetSnapshot()}
		}
		for _, u := range m.GetPaperUpdates() {
			if len(joined.PaperUpdates) == maxEventPapers {
				truncated = true
				break
			}
			joined.PaperUpdates = append(joined.PaperUpdates, u)
		}
		if !m.GetMore() {
			joined.Batch, joined.Active, joined.Hosts, joined.HostsOmitted = m.GetBatch(), m.GetActive(), m.GetHosts(), m.GetHostsOmitted()
			return joined, truncated, nil
		}
	}
}

// download streams a stored PDF (?batch=ID&paper=ID) from ReadPaper as an attachment.
func (h *handler) download(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), StreamTimeout)
	defer cancel()
	ctx = outgoing(ctx, r)
	q := r.URL.Query()
	stream, first, ok := firstMessage(ctx, h, w, r, func() (grpc.ServerStreamingClient[pb.ReadPaperResponse], error) {
		return h.client.ReadPaper(ctx, &pb.ReadPaperRequest{BatchId: q.Get("batch"), PaperId: q.Get("paper")})
	})
	if !ok {
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/pdf")
	hd.Set("Content-Length", strconv.FormatInt(first.GetSize(), 10))
	hd.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": fileName(q.Get("paper"))}))
	hd.Set("Cache-Control", "no-store")
	for m := first; ; {
		if _, err := w.Write(m.GetData()); err != nil {
			return
		}
		var err error
		if m, err = stream.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				h.log.Warn("download cut short", "batch", q.Get("batch"), "paper", q.Get("paper"), "err", err)
				panic(http.ErrAbortHandler) // the client must not take a short body for the file
			}
			return
		}
	}
}

// fileName makes a download's file name from a paper id: [A-Za-z0-9._-] kept, the rest "_",
// at most 100 characters, ".pdf" appended.
func fileName(id string) string {
	var b strings.Builder
	for _, c := range id {
		if b.Len() >= 100 {
			break
		}
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("paper")
	}
	return b.String() + ".pdf"
}
