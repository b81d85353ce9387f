package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// closeWait bounds how long a draining fetcher waits for the coordinator to end the Work stream
// after closing its side.
const closeWait = 5 * time.Second

// ErrAlreadyRunning is Run's error when the Fetcher's Run is running already (Run is not
// reentrant: one Work stream, one set of downloads per Fetcher).
var ErrAlreadyRunning = errors.New("fetcher: Run is running already")

// Run keeps the Work stream to the coordinator open over conn, reconnecting with exponential
// backoff and jitter, and runs the downloads it is assigned. While it runs, old spool files are
// swept every Config.SpoolSweepInterval. It returns nil when ctx is done
// (running downloads are aborted and waited for) or after Drain has finished. It is not
// reentrant: while it runs, another Run returns ErrAlreadyRunning.
func (f *Fetcher) Run(ctx context.Context, conn grpc.ClientConnInterface) error {
	if !f.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer f.running.Store(false) // last: after the runners ended
	client := pb.NewFetcherGatewayServiceClient(conn)
	defer f.startSweeper(ctx)()
	dctx, dcancel := context.WithCancelCause(ctx)
	f.stopRunners = make(chan struct{})
	defer func() {
		dcancel(&abortError{why: "fetcher stopped"})
		f.wg.Wait()
		close(f.stopRunners)
		f.runners.Wait()
		f.dl.client.CloseIdleConnections()
	}()
	backoff := f.cfg.ReconnectMin
	for {
		productive, err := f.session(ctx, dctx, client)
		if ctx.Err() != nil || f.isDrained() {
			return nil
		}
		if productive {
			backoff = f.cfg.ReconnectMin
		}
		delay := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, f.cfg.ReconnectMax)
		if st, ok := status.FromError(err); ok && refused(st.Code()) {
			// The coordinator refuses this id (another live process holds it, or the
			// credentials do not allow it): retrying fast would not help, and the operator
			// must act. Try again slowly, in case the holder was a dead process.
			delay = f.cfg.IDConflictBackoff/2 + rand.N(f.cfg.IDConflictBackoff/2+1)
			f.log.Error("the coordinator refused this fetcher's id; give every fetcher process its own --id (or leave it unset)",
				"id", f.cfg.ID, "code", st.Code().String(), "err", st.Message(), "retry_in", delay.String())
		} else {
			f.log.Warn("work stream to the coordinator ended; reconnecting", "err", err, "in", delay.String())
		}
		t := f.clk.NewTimer(delay)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-f.drained:
			t.Stop()
			return nil
		}
	}
}

// refused reports whether a Work stream ended with a code that says the coordinator refuses
// this fetcher as it is (its id or credentials), not that it is unavailable.
func refused(c codes.Code) bool {
	return c == codes.AlreadyExists || c == codes.PermissionDenied || c == codes.Unauthenticated
}

func (f *Fetcher) isDrained() bool {
	select {
	case <-f.drained:
		return true
	default:
		return false
	}
}

// session runs one Work stream until it breaks, ctx ends or Drain finishes. productive says
// whether the coordinator answered (so the reconnect backoff can start over).
func (f *Fetcher) session(ctx, dctx context.Context, client pb.FetcherGatewayServiceClient) (productive bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Work(sctx)
	if err != nil {
		return false, fmt.Errorf("open work stream: %w", err)
	}
	hb := f.clk.NewTicker(f.cfg.HeartbeatInterval)
	defer hb.Stop()
	hello, sid := f.hello()
	defer func() {
		f.mu.Lock()
		f.connected = false
		f.notifyLocked()
		f.mu.Unlock()
	}()
	// Taken before the Hello goes out: the Hello is the stream's first send.
	lastSend := f.clk.Now()
	if err := stream.Send(hello); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}

	in := make(chan *pb.WorkResponse)
	errc := make(chan error, 1)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case in <- m:
			case <-sctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-recvDone
	}()

	// held fires when the first started event held back (to be folded) is due on its own.
	var held clock.Timer
	var heldC <-chan time.Time
	defer func() {
		if held != nil {
			held.Stop()
		}
	}()
	flush := func() (int, error) {
		n, due, err := f.flush(stream, sid)
		if held == nil && !due.IsZero() {
			// Started events are held for one fixed duration, in order: the first is due first.
			held = f.clk.NewTimer(max(due.Sub(f.clk.Now()), 0))
			heldC = held.C()
		}
		return n, err
	}

	f.poke()
	for {
		select {
		case m := <-in:
			productive = true
			f.handle(dctx, m)
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				err = errors.New("coordinator closed the work stream")
			}
			return productive, err
		case <-heldC:
			held, heldC = nil, nil
			n, err := flush()
			if err != nil {
				return productive, err
			}
			if n > 0 {
				lastSend = f.clk.Now()
			}
		case <-f.wake:
			// The downloads that are runnable now run first, so that the events they are
			// about to queue go in this flush's batch (step 9 of the protocol): without the
			// yield a flush carried 1.8 events on average, with it 4.6 (get, 10,000 small
			// papers), and each message costs a Send, a wakeup of the transport's writer
			// and of the coordinator's receiver, and a decode. It waits for no clock: a
			// message is delayed only by work that was ready to run.
			runtime.Gosched()
			n, err := flush()
			if err != nil {
				return productive, err
			}
			if n > 0 {
				lastSend = f.clk.Now()
			}
		case now := <-hb.C():
			// The coordinator renews a lease on that lease's events only: running leases that
			// were quiet for a heartbeat interval get a keep-alive progress event.
			f.mu.Lock()
			kept := f.book.keepAlive(now.Add(-f.cfg.HeartbeatInterval/2), f.clk.Now())
			f.mu.Unlock()
			if kept > 0 {
				n, err := flush()
				if err != nil {
					return productive, err
				}
				if n > 0 {
					lastSend = f.clk.Now()
				}
			}
			// A Heartbeat tells the coordinator the stream is alive when it was quiet.
			if f.clk.Now().Sub(lastSend) >= f.cfg.HeartbeatInterval/2 {
				if err := stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}}); err != nil {
					return productive, fmt.Errorf("send heartbeat: %w", err)
				}
				lastSend = now
			}
		case <-f.drained:
			if _, err := flush(); err != nil {
				return productive, err
			}
			if err := stream.CloseSend(); err != nil {
				return productive, fmt.Errorf("close work stream: %w", err)
			}
			f.awaitClose(in, errc)
			return productive, nil
		case <-ctx.Done():
			return productive, ctx.Err()
		}
	}
}

// awaitClose waits (bounded) for the coordinator to end a stream the fetcher closed.
func (f *Fetcher) awaitClose(in <-chan *pb.WorkResponse, errc <-chan error) {
	t := f.clk.NewTimer(closeWait)
	defer t.Stop()
	for {
		select {
		case <-in:
		case <-errc:
			return
		case <-t.C():
			return
		}
	}
}

// hello builds the Hello of a new stream and starts the session's bookkeeping (credits: see
// leaseBook.hello).
func (f *Fetcher) hello() (*pb.WorkRequest, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessionID++
	f.connected = true
	initial, inFlight := f.book.hello(f.cfg.Slots)
	h := &pb.Hello{
		FetcherId: f.cfg.ID,
		BootId:    f.bootID,
		Slots:     int32(initial),
		InFlight:  inFlight,
		Version:   Version,
		Prefetch:  int32(f.cfg.Prefetch),
		// Folding and batching wait for the coordinator's Welcome (leaseBook.fold, .batch);
		// the fetcher takes batched responses at once.
		FoldEvents:  true,
		BatchEvents: true,
	}
	f.notifyLocked()
	return &pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: h}}, f.sessionID
}

// flush sends what is pending: queued events and the started events held back that are due
// (all of them once draining), Draining, the terminal events not yet sent on this stream, and
// the credits of freed slots (see leaseBook.take). Draining follows the started events, so
// that the coordinator does not take a running download for one not started. It returns how
// many messages it sent, and when the next started event held back is due (zero: none).
func (f *Fetcher) flush(stream grpc.BidiStreamingClient[pb.WorkRequest, pb.WorkResponse], sid uint64) (int, time.Time, error) {
	f.mu.Lock()
	msgs, tail, due := f.book.take(sid, f.draining, f.clk.Now())
	if f.draining && f.drainSentSession != sid {
		f.drainSentSession = sid
		msgs = append(msgs, &pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{Reason: "shutting down"}}})
	}
	msgs = append(msgs, tail...)
	if f.book.batch {
		msgs = batchEvents(msgs)
	}
	f.notifyLocked()
	f.mu.Unlock()
	for i, m := range msgs {
		if err := stream.Send(m); err != nil {
			return i, due, fmt.Errorf("send: %w", err)
		}
	}
	return len(msgs), due, nil
}

// batchEvents merges each run of event messages of msgs (in order) into its first message,
// whose more_events carries the others' events (step 9 of the protocol), at most
// validate.MaxWorkBatch events a message. A message with folded credits ends its run: they
// are applied after the last event of the message carrying them, as before. It reuses msgs.
func batchEvents(msgs []*pb.WorkRequest) []*pb.WorkRequest {
	out := msgs[:0]
	var run *pb.WorkRequest // the message of the open run
	for _, m := range msgs {
		if ev := m.GetEvent(); ev != nil && run != nil && len(run.MoreEvents) < validate.MaxWorkBatch-1 {
			run.MoreEvents = append(run.MoreEvents, ev)
			if m.FoldedCredits != 0 {
				run.FoldedCredits, run = m.FoldedCredits, nil
			}
			continue
		}
		out = append(out, m)
		run = nil
		if m.GetEvent() != nil && m.FoldedCredits == 0 {
			run = m
		}
	}
	clear(msgs[len(out):])
	return out
}

// handle applies one message from the coordinator: a batch (step 9 of the protocol) as its
// messages one by one, in order, at most validate.MaxWorkBatch of them (the rest is ignored,
// as a coordinator's protocol error: the coordinator reclaims an Assign never started, and
// an Ack not applied only makes the fetcher report the result again).
func (f *Fetcher) handle(dctx context.Context, m *pb.WorkResponse) {
	moreAssigns, moreAcks := m.GetMoreAssigns(), m.GetMoreAcks()
	if len(moreAssigns) > validate.MaxWorkBatch-1 || len(moreAcks) > validate.MaxWorkBatch-1 {
		f.log.Warn("the coordinator batched too many messages; ignoring the excess",
			"assigns", len(moreAssigns), "acks", len(moreAcks), "limit", validate.MaxWorkBatch)
		moreAssigns, moreAcks = moreAssigns[:min(len(moreAssigns), validate.MaxWorkBatch-1)], moreAcks[:min(len(moreAcks), validate.MaxWorkBatch-1)]
	}
	switch msg := m.GetMsg().(type) {
	case *pb.WorkResponse_Assign:
		f.startLease(dctx, msg.Assign)
		for _, a := range moreAssigns {
			f.startLease(dctx, a)
		}
	case *pb.WorkResponse_Cancel:
		f.mu.Lock()
		l, removed := f.book.cancel(msg.Cancel.GetLeaseId(), f.clk.Now())
		if l != nil {
			l.cancel(&abortError{why: "cancelled by the coordinator: " + msg.Cancel.GetReason()})
		}
		if removed || (l != nil && !l.running) { // forgotten, or a waiting successor voided
			f.notifyLocked()
		}
		f.mu.Unlock()
		f.poke()
	case *pb.WorkResponse_Ack:
		f.mu.Lock()
		forgot := f.book.ack(msg.Ack.GetLeaseId(), msg.Ack.GetSequence())
		for _, a := range moreAcks {
			forgot = f.book.ack(a.GetLeaseId(), a.GetSequence()) || forgot
		}
		if forgot {
			f.notifyLocked()
		}
		f.mu.Unlock()
	case *pb.WorkResponse_Welcome:
		// The coordinator accepts folded messages on this stream (step 8 of the protocol).
		f.mu.Lock()
		f.book.welcome(msg.Welcome)
		f.mu.Unlock()
	default:
		f.log.Warn("ignoring an unknown message from the coordinator")
	}
}
