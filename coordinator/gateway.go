package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/auth"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// gateway implements FetcherGatewayService.
type gateway struct {
	pb.UnimplementedFetcherGatewayServiceServer
	c *Coordinator
}

// gone tells the loop a stream ended (its leases are re-queued). After Run returned nobody
// listens, which is fine.
func (g *gateway) gone(conn *fetcherConn) {
	select {
	case g.c.gwInbox <- &goneMsg{c: conn}:
	case <-g.c.done:
	}
}

// Work is a fetcher's stream. Every message is validated (internal/validate.WorkRequest)
// before it reaches the loop; an invalid one ends the stream with INVALID_ARGUMENT. The handler goroutine is the stream's writer: it sends what the
// loop queued on the conn's bounded buffer. A receiver goroutine forwards incoming messages to
// the loop; it ends when the stream does (when this handler returns).
func (g *gateway) Work(stream pb.FetcherGatewayService_WorkServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	// Nothing is allocated for the stream before its Hello is known to be valid.
	if err := validate.WorkRequest(true, first); err != nil {
		g.c.m.protocolErrors.Inc()
		return err
	}
	hello := first.GetHello()
	if err := g.authorizeID(ctx, hello.GetFetcherId()); err != nil {
		return err
	}
	buffer := max(g.c.cfg.StreamBuffer, 2*int(hello.GetSlots())+64)
	conn := newFetcherConn(buffer)
	conn.share = make(chan struct{}, g.c.streamShare(int(hello.GetSlots())))
	if id, ok := auth.IdentityFrom(ctx); ok {
		conn.subject = id.Subject
	}
	reply := make(chan error, 1)
	if err := g.c.postWait(ctx, &helloMsg{c: conn, hello: hello, reply: reply}); err != nil {
		return err
	}
	herr, err := await(ctx, g.c, reply)
	if err == nil && herr != nil {
		err = toStatus(herr)
	}
	if err != nil {
		if herr == nil {
			// The loop may still register the conn: make sure it forgets it.
			g.gone(conn)
		}
		return err
	}
	shuttingDown := false
	defer func() {
		if !shuttingDown {
			g.gone(conn)
		}
	}()

	// The receiver is owned by this handler: when the handler returns, gRPC cancels ctx, which
	// ends both stream.Recv and postWait, so the goroutine never outlives the call.
	recvErr := make(chan error, 1)
	budget := g.newBudget(conn, int(hello.GetSlots()))
	// Batching (step 9 of the protocol) both ways, when the Hello asked for it: its Welcome
	// accepted the fetcher's batches.
	batch := hello.GetBatchEvents()
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			// A peer that breaks the protocol loses its stream (its leases are re-queued).
			if err := validate.WorkRequest(false, req); err != nil {
				g.c.m.protocolErrors.Inc()
				recvErr <- err
				return
			}
			if !batch && len(req.GetMoreEvents()) > 0 {
				g.c.m.protocolErrors.Inc()
				recvErr <- validate.Field("more_events", "batched events are accepted only from a fetcher whose hello set batch_events")
				return
			}
			// Every event of a batch counts against the stream's rate, as a message of its own.
			places, err := budget.take(ctx, 1+len(req.GetMoreEvents()))
			if err != nil {
				recvErr <- err
				return
			}
			msg := &streamMsg{c: conn, req: req, places: places, checks: g.c.checkCompletions(req)}
			if err := g.c.postWait(ctx, msg); err != nil {
				conn.release(places)
				recvErr <- err
				return
			}
		}
	}()

	w := &workWriter{stream: stream, out: conn.out, batch: batch}
	for {
		select {
		case m := <-conn.out:
			if err := w.send(m); err != nil {
				return err
			}
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			// The fetcher closed its side: send what the loop still has for it (acks of
			// its last events), then end.
			done := make(chan struct{})
			if err := g.c.postWait(ctx, &barrierMsg{reply: done}); err != nil {
				return err
			}
			for {
				select {
				case m := <-conn.out:
					if err := w.send(m); err != nil {
						return err
					}
				case <-done:
					for {
						select {
						case m := <-conn.out:
							if err := w.send(m); err != nil {
								return err
							}
						default:
							return nil
						}
					}
				case <-ctx.Done():
					return status.FromContextError(ctx.Err()).Err()
				case <-g.c.done:
					return errStopped
				}
			}
		case <-g.c.streamsClosed:
			// The coordinator is shutting down: leave the leases in place for the next one.
			shuttingDown = true
			return errShuttingDown
		case <-conn.killed:
			code := codes.Aborted
			if errors.Is(conn.killErr, errStreamOverflow) {
				code = codes.ResourceExhausted
			} else if errors.Is(conn.killErr, errInvalid) {
				code = codes.InvalidArgument
			} else if errors.Is(conn.killErr, errPrecondition) {
				code = codes.FailedPrecondition
			}
			// The code says "invalid argument"; the message need not repeat it.
			return status.Error(code, strings.TrimPrefix(conn.killErr.Error(), errInvalid.Error()+": "))
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-g.c.done:
			return errStopped
		}
	}
}

// workWriter sends what the loop queued for one Work stream. For a fetcher that takes batched
// responses (step 9 of the protocol), it sends a run of Assigns (Acks) it finds queued as one
// message, at most validate.MaxWorkBatch: batching never waits for a message, and keeps the
// loop's order.
type workWriter struct {
	stream interface{ Send(*pb.WorkResponse) error }
	out    <-chan *pb.WorkResponse
	batch  bool
}

// send sends m, and with it what follows it in the queue, batched.
func (w *workWriter) send(m *pb.WorkResponse) error {
	for m != nil {
		var b *pb.WorkResponse
		if w.batch {
			m, b = w.gather(m)
		}
		if err := w.stream.Send(m); err != nil {
			return err
		}
		m = b
	}
	return nil
}

// gather returns m with the run of messages of its kind (Assign or Ack) queued after it
// batched into it, and the first queued message that ended the run (nil: none was queued).
func (w *workWriter) gather(m *pb.WorkResponse) (batched, next *pb.WorkResponse) {
	if m.GetAssign() == nil && m.GetAck() == nil {
		return m, nil
	}
	batched = m
	for n := 1; n < validate.MaxWorkBatch; n++ {
		var x *pb.WorkResponse
		select {
		case x = <-w.out:
		default:
			return batched, nil
		}
		a, k := x.GetAssign(), x.GetAck()
		if (a == nil || m.GetAssign() == nil) && (k == nil || m.GetAck() == nil) {
			return batched, x
		}
		if batched == m {
			// A new message: the loop's messages are not changed. Room for what is queued.
			batched = &pb.WorkResponse{Msg: m.GetMsg()}
			if c := min(len(w.out)+1, validate.MaxWorkBatch-n); a != nil {
				batched.MoreAssigns = make([]*pb.Assign, 0, c)
			} else {
				batched.MoreAcks = make([]*pb.Ack, 0, c)
			}
		}
		if a != nil {
			batched.MoreAssigns = append(batched.MoreAssigns, a)
		} else {
			batched.MoreAcks = append(batched.MoreAcks, k)
		}
	}
	return batched, nil
}

// authorizeID refuses (PERMISSION_DENIED) a Hello whose fetcher id the stream's credential
// may not use (a token's fetcher-ids=, a certificate's paperfetch://fetcher/ID SANs).
func (g *gateway) authorizeID(ctx context.Context, fetcherID string) error {
	id, ok := auth.IdentityFrom(ctx)
	if !ok || id.FetcherIDs.Allows(fetcherID) {
		return nil
	}
	g.c.m.duplicateIDs.Inc()
	msg := fmt.Sprintf("credential %s may not use fetcher id %q (it may use: %s); start the fetcher with one of its ids (--id)",
		id.Subject, fetcherID, id.FetcherIDs)
	g.c.cfg.Logger.Warn("fetcher refused: id not allowed by its credential", "fetcher", fetcherID, "credential", id.Subject)
	st := status.New(codes.PermissionDenied, msg)
	if d, err := st.WithDetails(&errdetails.ResourceInfo{ResourceType: resourceFetcher, ResourceName: fetcherID, Owner: id.Subject, Description: msg}); err == nil {
		st = d
	}
	return st.Err()
}
