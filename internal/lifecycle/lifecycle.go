// Package lifecycle runs the long-lived parts of a paperfetch process (gRPC and HTTP servers,
// the coordinator's loop, a fetcher's work loop) and stops them in one order, written once for
// the coordinator, the fetcher and the embedded system. It is a run group in the style of
// oklog/run and bb-storage's program, with the order of the stop made explicit:
//
//  1. drain: every part's Drain hook runs, in the order the parts were given (a server's
//     readiness turns NOT_SERVING, then a fetcher lets its running downloads finish);
//  2. stop: the parts are stopped in the reverse order, each completely before the next: its
//     context is cancelled (a grpcserver.Server then drains with GracefulStop and a hard-stop
//     timer), its Stopping hook runs (the coordinator ends its streams, so that the graceful
//     stop does not wait for them), and its Run returns.
//
// So the parts are given in dependency order: what others use first (the coordinator's loop
// before the server that feeds it, the server before the clients inside the process).
// It imports no product package.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Part is one long-lived part of a process.
type Part struct {
	// Name names the part in logs and errors.
	Name string
	// Run runs the part until ctx is cancelled, then stops it (gracefully) and returns nil, or
	// the error that stopped it. Required.
	Run func(ctx context.Context) error
	// Drain, when set, is called first when the group stops, while every part still runs.
	// It returns when the draining is done (or given up).
	Drain func()
	// Stopping, when set, is called right after Run's context is cancelled, before waiting
	// for Run to return.
	Stopping func()
}

// Group is a set of running parts. Start one with Start; Stop stops it.
type Group struct {
	logger   *slog.Logger
	parts    []Part
	cancels  []context.CancelFunc
	done     []chan error
	exited   chan struct{} // closed when the first part returns by itself
	exitOnce sync.Once
	stopOnce sync.Once
	stopErr  error
}

// Start starts every part, in order, each in its own goroutine. A nil logger discards the
// group's logs.
func Start(logger *slog.Logger, parts ...Part) *Group {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Group{logger: logger, parts: parts, exited: make(chan struct{})}
	for _, p := range parts {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		g.cancels, g.done = append(g.cancels, cancel), append(g.done, done)
		go func() {
			err := p.Run(ctx)
			if ctx.Err() == nil { // it ended by itself: the process stops
				if err != nil {
					logger.Error("stopped", "part", p.Name, "err", err)
				} else {
					logger.Info("stopped by itself", "part", p.Name)
				}
				g.exitOnce.Do(func() { close(g.exited) })
			}
			done <- err
		}()
	}
	return g
}

// Exited is closed when a part returned without being stopped (it failed, or it finished).
func (g *Group) Exited() <-chan struct{} { return g.exited }

// Stop stops the group (see the package comment for the order) and returns the errors of the
// parts, each prefixed with its name (nil when every part returned nil). Calls after the
// first return the same result.
func (g *Group) Stop() error {
	g.stopOnce.Do(func() {
		g.logger.Info("shutting down")
		for _, p := range g.parts {
			if p.Drain != nil {
				p.Drain()
			}
		}
		var errs []error
		for i := len(g.parts) - 1; i >= 0; i-- {
			p := g.parts[i]
			g.cancels[i]()
			if p.Stopping != nil {
				p.Stopping()
			}
			if err := <-g.done[i]; err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			}
			g.logger.Debug("stopped", "part", p.Name)
		}
		g.stopErr = errors.Join(errs...)
	})
	return g.stopErr
}

// Run starts the parts (Start) and stops them (Stop) when ctx is done or a part returned by
// itself; it returns Stop's result. This is the whole life of a service binary.
func Run(ctx context.Context, logger *slog.Logger, parts ...Part) error {
	g := Start(logger, parts...)
	select {
	case <-ctx.Done():
	case <-g.Exited():
	}
	return g.Stop()
}

// Parallel is one part made of parts that run side by side (the fetchers of one process):
// their Drain hooks run concurrently (so that each gets the whole grace), then their contexts
// are cancelled together, their Stopping hooks run and all of them are waited for. Its error
// joins theirs.
func Parallel(name string, parts ...Part) Part {
	each := func(f func(Part)) {
		var wg sync.WaitGroup
		for _, p := range parts {
			wg.Go(func() { f(p) })
		}
		wg.Wait()
	}
	return Part{
		Name: name,
		Run: func(ctx context.Context) error {
			var mu sync.Mutex
			var errs []error
			each(func(p Part) {
				if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
					mu.Unlock()
				}
			})
			return errors.Join(errs...)
		},
		Drain: func() {
			each(func(p Part) {
				if p.Drain != nil {
					p.Drain()
				}
			})
		},
		Stopping: func() {
			for _, p := range parts {
				if p.Stopping != nil {
					p.Stopping()
				}
			}
		},
	}
}
