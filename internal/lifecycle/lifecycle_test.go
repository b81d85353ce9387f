package lifecycle

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder records the events of parts, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) part(name string, err error) Part {
	return Part{
		Name: name,
		Run: func(ctx context.Context) error {
			<-ctx.Done()
			r.add(name + " stopped")
			return err
		},
		Drain:    func() { r.add(name + " drain") },
		Stopping: func() { r.add(name + " stopping") },
	}
}

// TestOrder: drains in the given order, then each part stopped completely in reverse order.
func TestOrder(t *testing.T) {
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	boom := errors.New("boom")
	err := Run(ctx, nil, r.part("loop", nil), r.part("server", context.Canceled), r.part("client", boom))
	// A part's Stopping hook and the end of its Run race (the hook ends what Run waits for);
	// both come before anything of the part given before it.
	want := [][]string{
		{"loop drain"}, {"server drain"}, {"client drain"},
		{"client stopped", "client stopping"},
		{"server stopped", "server stopping"},
		{"loop stopped", "loop stopping"},
	}
	i := 0
	for _, group := range want {
		got := slices.Clone(r.events[i:min(i+len(group), len(r.events))])
		slices.Sort(got)
		if !reflect.DeepEqual(got, group) {
			t.Fatalf("events %q: at %d want %q", r.events, i, group)
		}
		i += len(group)
	}
	if !errors.Is(err, boom) || err.Error() != "client: boom" {
		t.Fatalf("Run: %v", err)
	}
}

// TestPartExits: a part that returns by itself stops the others, in order; its error is
// returned, and Stop returns the same again.
func TestPartExits(t *testing.T) {
	var r recorder
	failed := errors.New("listener closed")
	g := Start(nil, r.part("loop", nil), Part{Name: "server", Run: func(context.Context) error { return failed }})
	<-g.Exited()
	err := g.Stop()
	if !errors.Is(err, failed) || err.Error() != "server: listener closed" {
		t.Fatalf("Stop: %v", err)
	}
	if err2 := g.Stop(); err2 != err {
		t.Fatalf("second Stop: %v", err2)
	}
	got := slices.Clone(r.events)
	slices.Sort(got[1:])
	if want := []string{"loop drain", "loop stopped", "loop stopping"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("events %q", r.events)
	}
}

// TestParallel: the parts of a Parallel part drain concurrently (each waits for the other's
// drain to have started) and stop together; their errors are joined under their names.
func TestParallel(t *testing.T) {
	var r recorder
	var barrier sync.WaitGroup // both drains must be running at once to pass it
	barrier.Add(2)
	passed := make(chan struct{})
	go func() { barrier.Wait(); close(passed) }()
	part := func(name string, err error) Part {
		p := r.part(name, err)
		p.Drain = func() {
			barrier.Done()
			select {
			case <-passed:
			case <-time.After(10 * time.Second): // a bound on the failure, not a synchronisation
				t.Errorf("%s: the drains ran one after the other", name)
			}
			r.add(name + " drain")
		}
		return p
	}
	broken := errors.New("broken")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Run(ctx, nil, Parallel("fetchers", part("f1", nil), part("f2", broken)))
	if !errors.Is(err, broken) || err.Error() != "fetchers: f2: broken" {
		t.Fatalf("Run: %v", err)
	}
	got := slices.Clone(r.events)
	slices.Sort(got)
	want := []string{"f1 drain", "f1 stopped", "f1 stopping", "f2 drain", "f2 stopped", "f2 stopping"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events %q", r.events)
	}
}
