package faulttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/paperfetch/paperfetch/bench/originlib"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// proc is one running binary of the cluster.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	// ua is the User-Agent of a fetcher (the origin counts its requests by it).
	ua string
	// metrics is the /metrics URL of a fetcher.
	metrics string
	// done is closed when the process has exited; err is its Wait error then.
	done chan struct{}
	err  error
	// expected is set before the test signals the process, so its exit is not a failure.
	expected atomic.Bool
	// fate says how the process ended ("SIGKILL", "SIGTERM"), under cluster.mu.
	fate string
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// cluster owns the coordinator and fetcher processes of one test: it starts them, signals
// them, and stops whatever still runs at the end.
type cluster struct {
	t        *testing.T
	dir      string // logs
	dataDir  string // the coordinator's store
	blobDir  string
	blobURL  string
	coordAdr string
	// fail is called with the cause when a process exits without being signalled.
	fail context.CancelCauseFunc
	// coordFlags are appended to every coordinator's flags (set before the first start; a
	// flag given twice takes the last value).
	coordFlags []string

	wg sync.WaitGroup // one waiter goroutine per process

	mu          sync.Mutex
	procs       []*proc // every process started, in order
	coord       *proc
	fetchers    []*proc // live fetchers, oldest first
	coordStarts int
	nextFetcher int
}

// newCluster prepares the folders and the coordinator's address; processes start later.
func newCluster(t *testing.T, dir string, fail context.CancelCauseFunc) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: dir, fail: fail}
	c.dataDir = filepath.Join(dir, "data")
	c.blobDir = filepath.Join(dir, "blobs")
	for _, d := range []string{c.dataDir, c.blobDir, filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c.blobURL = "file://" + c.blobDir
	c.coordAdr = freeLoopbackAddr(t)
	t.Cleanup(c.shutdown)
	return c
}

// startScenario starts a scenario test of the real binaries (skipped with -short): it returns a
// context that ends after d or as soon as a process exits unexpectedly, the suite's origin, and
// a cluster in a temporary folder with no process started yet.
func startScenario(t *testing.T, d time.Duration) (context.Context, *cluster, *originlib.Origin, *httptest.Server) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the real binaries; skipped with -short")
	}
	ctx, fail := context.WithCancelCause(t.Context())
	ctx, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(func() { cancel(); fail(nil) })
	origin, srv := startOrigin(t)
	return ctx, newCluster(t, t.TempDir(), fail), origin, srv
}

// freeLoopbackAddr returns a 127.0.0.1 address that was free a moment ago. The coordinator
// needs a fixed address so that it can be restarted where its fetchers reconnect.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// start runs bin with args; its output goes to a log file named after name.
func (c *cluster) start(name, bin string, args ...string) *proc {
	c.t.Helper()
	p := &proc{name: name, logPath: filepath.Join(c.dir, "logs", name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	if err := p.cmd.Start(); err != nil {
		_ = logFile.Close()
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := p.cmd.Wait()
		_ = logFile.Close()
		p.err = err
		close(p.done)
		if !p.expected.Load() {
			c.fail(fmt.Errorf("%s exited unexpectedly (%v); last lines of its log:\n%s", name, err, tail(p.logPath, 15)))
		}
	}()
	return p
}

// startCoordinator starts a coordinator on the cluster's fixed address and store.
func (c *cluster) startCoordinator() *proc {
	c.t.Helper()
	c.mu.Lock()
	c.coordStarts++
	name := fmt.Sprintf("coordinator-%d", c.coordStarts)
	c.mu.Unlock()
	args := []string{
		"--listen", c.coordAdr,
		"--data", c.dataDir,
		"--blob", c.blobURL,
		"--per-host-delay", "0s",
		"--per-host-concurrency", "32",
		// Kills abort attempts; keep every paper's budget well above what the suite spends.
		"--max-attempts", "30",
		"--reconnect-grace", "2s",
		"--lease-ttl", "20s",
		"--retry-base-delay", "100ms",
		"--retry-max-delay", "1s",
		"--breaker-threshold", "50",
		"--breaker-cooldown", "1s",
	}
	p := c.start(name, bins.coordinator, append(args, c.coordFlags...)...)
	c.mu.Lock()
	c.coord = p
	c.mu.Unlock()
	return p
}

// startFetcher starts a new fetcher with a fresh id (and User-Agent).
func (c *cluster) startFetcher(slots int) *proc {
	c.t.Helper()
	return c.startFetcherWith(slots, true)
}

// startFetcherWith starts a new fetcher; withID false leaves --id unset (the default id, as
// an operator starting several fetchers on one machine would).
func (c *cluster) startFetcherWith(slots int, withID bool) *proc {
	c.t.Helper()
	c.mu.Lock()
	c.nextFetcher++
	id := fmt.Sprintf("fetcher-%d", c.nextFetcher)
	c.mu.Unlock()
	ua := "paperfetch-faulttest/" + id
	args := []string{
		"--coordinator", c.coordAdr,
		"--listen", "127.0.0.1:0",
		"--blob", c.blobURL,
		"--allow-private-networks",
		"--slots", fmt.Sprint(slots),
		"--user-agent", ua,
		"--stall-timeout", "5s",
		"--drain-grace", "5s",
	}
	metricsAddr := freeLoopbackAddr(c.t)
	args = append(args, "--metrics-listen", metricsAddr)
	if withID {
		args = append(args, "--id", id)
	}
	p := c.start(id, bins.fetcher, args...)
	p.ua = ua
	p.metrics = "http://" + metricsAddr + "/metrics"
	c.mu.Lock()
	c.fetchers = append(c.fetchers, p)
	c.mu.Unlock()
	return p
}

// client returns a client of the cluster's coordinator (its address survives restarts); the
// connection is closed at the end of the test.
func (c *cluster) client() pb.CoordinatorServiceClient {
	c.t.Helper()
	conn, err := grpc.NewClient(c.coordAdr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return pb.NewCoordinatorServiceClient(conn)
}

// fates maps every fetcher id to how it ended ("SIGKILL", "SIGTERM", or "running").
func (c *cluster) fates() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for _, p := range c.procs {
		if p.ua == "" {
			continue
		}
		fate := p.fate
		if fate == "" {
			fate = "running"
		}
		out[p.name] = fate
	}
	return out
}

// liveFetchers returns the fetchers not signalled yet.
func (c *cluster) liveFetchers() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*proc(nil), c.fetchers...)
}

// coordinator returns the current coordinator process.
func (c *cluster) coordinator() *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.coord
}

// signal sends sig to p, marking its exit as expected, and forgets p if it is a fetcher.
func (c *cluster) signal(p *proc, sig syscall.Signal) {
	c.t.Helper()
	p.expected.Store(true)
	c.mu.Lock()
	if p.fate == "" {
		p.fate = map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM"}[sig]
	}
	for i, f := range c.fetchers {
		if f == p {
			c.fetchers = append(c.fetchers[:i:i], c.fetchers[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// waitExit waits for p to exit, at most d.
func waitExit(ctx context.Context, p *proc, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s did not exit within %v", p.name, d)
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s to exit: %w", p.name, context.Cause(ctx))
	}
}

// stopAll sends SIGTERM to every process still running (fetchers first) and waits for them;
// it returns the processes that did not exit cleanly.
func (c *cluster) stopAll(ctx context.Context) []string {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	var bad []string
	// Fetchers first, so they can report to the coordinator before it stops.
	for _, wantCoord := range []bool{false, true} {
		var signalled []*proc
		for _, p := range procs {
			if strings.HasPrefix(p.name, "coordinator") != wantCoord || p.exited() || p.expected.Load() {
				continue
			}
			c.mu.Lock()
			p.fate = "stopped at the end"
			c.mu.Unlock()
			c.signal(p, syscall.SIGTERM)
			signalled = append(signalled, p)
		}
		for _, p := range signalled {
			if err := waitExit(ctx, p, 30*time.Second); err != nil {
				bad = append(bad, err.Error())
				continue
			}
			if p.err != nil {
				bad = append(bad, fmt.Sprintf("%s: SIGTERM exit: %v", p.name, p.err))
			}
		}
	}
	return bad
}

// shutdown kills whatever still runs, waits for every waiter, and on failure logs the tails
// of the processes' logs.
func (c *cluster) shutdown() {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			p.expected.Store(true)
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	c.wg.Wait()
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("--- last lines of %s (%s):\n%s", p.name, p.logPath, tail(p.logPath, 12))
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
