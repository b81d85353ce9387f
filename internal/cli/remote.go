package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/grpcclient"
)

// DefaultCoordinator is the coordinator address of the remote commands unless --coordinator or
// PAPERFETCH_COORDINATOR says otherwise.
const DefaultCoordinator = "localhost:7400"

// remote holds the flags shared by the commands that talk to a coordinator.
type remote struct {
	addr    string
	timeout time.Duration
	client  *grpcclient.Flags
}

// addRemoteFlags registers --coordinator, --timeout and the client's transport flags.
func addRemoteFlags(fs *flag.FlagSet) *remote {
	r := &remote{}
	fs.StringVar(&r.addr, "coordinator", DefaultCoordinator, "`HOST:PORT` of the coordinator")
	fs.DurationVar(&r.timeout, "timeout", 30*time.Second, "deadline of each call to the coordinator")
	r.client = grpcclient.RegisterFlags(fs)
	return r
}

// dial connects to the coordinator (lazily: errors show up on the first call).
func (r *remote) dial() (*grpc.ClientConn, pb.CoordinatorServiceClient, error) {
	if r.timeout <= 0 {
		return nil, nil, usagef("--timeout must be positive")
	}
	conn, err := r.client.Dial(r.addr)
	if err != nil {
		return nil, nil, &exitError{code: ExitUsage, err: err}
	}
	return conn, pb.NewCoordinatorServiceClient(conn), nil
}

// call returns a context with the per-call deadline.
// eachBatch dials the coordinator and calls do once per batch id in ids (at least one; exactly
// one unless many is set), each call with its own deadline; an RPC error is reported as the
// command name plus the batch id.
func (r *remote) eachBatch(ctx context.Context, name string, ids []string, many bool,
	do func(ctx context.Context, client pb.CoordinatorServiceClient, id string) error) error {
	switch {
	case many && len(ids) == 0:
		return usagef("want at least one BATCH id")
	case !many && len(ids) != 1:
		return usagef("want exactly one BATCH id")
	}
	conn, client, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, id := range ids {
		callCtx, cancel := r.call(ctx)
		err := do(callCtx, client, id)
		cancel()
		if err != nil {
			return r.rpcError(name+" "+id, err)
		}
	}
	return nil
}

func (r *remote) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// rpcError explains a failed call for a human: which coordinator, what went wrong.
func (r *remote) rpcError(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return &exitError{code: ExitUnreachable, err: fmt.Errorf("%s: cannot reach the coordinator at %s (%s); is it running? (--coordinator, PAPERFETCH_COORDINATOR)", what, r.addr, st.Message())}
	case codes.DeadlineExceeded:
		return &exitError{code: ExitUnreachable, err: fmt.Errorf("%s: the coordinator at %s did not answer within %s (--timeout)", what, r.addr, r.timeout)}
	case codes.NotFound:
		return &exitError{code: ExitFailed, err: errors.New(st.Message())} // e.g. batch "x" does not exist
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s: %s (check the token and TLS flags)", what, st.Message())
	}
	return fmt.Errorf("%s: %s: %s", what, st.Code(), st.Message())
}

// isInterrupted reports whether err comes from the user interrupting the command.
func isInterrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled)
}
