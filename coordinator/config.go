package coordinator

import (
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gocloud.dev/blob"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paperfetch/paperfetch/internal/clock"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// HostLimits are the politeness limits of one host.
type HostLimits struct {
	// Delay is the minimum time between two request starts on the host; 0 means the
	// default, negative means none.
	Delay time.Duration
	// Concurrency is the maximum number of concurrent downloads from the host; 0 means the
	// default.
	Concurrency int
}

// Config configures a Coordinator. Zero values mean the documented defaults.
type Config struct {
	// DataDir holds the store, DataDir/coordinator.db (created).
	DataDir string
	// Bucket is the blob store ReadPaper reads from, and against which completions reported by
	// fetchers are verified (the blob must exist with the reported size before the paper is
	// SUCCEEDED). It must be the fetchers' blob store. nil makes ReadPaper FAILED_PRECONDITION
	// and completions are then believed unverified.
	Bucket *blob.Bucket
	// StreamRate and StreamRatePerSlot bound the messages per second of one Work stream:
	// StreamRate + StreamRatePerSlot × Hello.slots, bursts of twice that (defaults 100 and
	// 1000: a slot downloading small PDFs from a fast origin finishes hundreds a second, with
	// about four messages each); a faster stream is throttled (budgets.go).
	StreamRate, StreamRatePerSlot float64
	// Verifiers is the number of goroutines checking completions against Bucket (default 8).
	Verifiers int
	// PerHostDelay is the minimum time between request starts on one host. 0 means the
	// default, 1s; negative means no delay.
	PerHostDelay time.Duration
	// PerHostConcurrency is the maximum number of concurrent downloads per host (default 2).
	PerHostConcurrency int
	// HostOverrides are per-host limits, keyed by host name or host:port.
	HostOverrides map[string]HostLimits
	// Resolve says where DOIs are resolved; its API hosts get their own politeness defaults
	// (see ResolveConfig.apiHostLimits) unless HostOverrides names them.
	Resolve ResolveConfig
	// apiLimits are Resolve's host defaults, computed by withDefaults.
	apiLimits map[string]HostLimits
	// MaxAttempts is how many failed attempts a paper may have before it fails (default 5).
	MaxAttempts int
	// LeaseTTL is how long a lease lives without an event of its own from its fetcher (default
	// 60s; fetchers report every running lease at least every heartbeat interval, 10s).
	LeaseTTL time.Duration
	// StartTimeout is how long after an Assign the fetcher has to report the lease started
	// (default 30s); a lease not started by then is cancelled and re-queued.
	StartTimeout time.Duration
	// DeadlineGrace is added to the download timeout sent in the Assign (Limits.Timeout,
	// default 15m) to give the lease's hard deadline: past it the lease is cancelled and
	// re-queued however chatty its fetcher is (default 1m: reporting and verifying the result).
	DeadlineGrace time.Duration
	// FetcherSilence: when a second stream claims the fetcher id of a registered one (from
	// another process: another boot id), the registered stream keeps the id unless it has been
	// silent this long, and the newcomer is refused with ALREADY_EXISTS (default 30s, three
	// fetcher heartbeats).
	FetcherSilence time.Duration
	// ReconnectGrace is how long after a restart fetchers may re-announce their leases
	// before those are re-queued (default 15s).
	ReconnectGrace time.Duration
	// MaxBatchPapers bounds the papers of one batch (default 2,000,000).
	MaxBatchPapers int
	// Limits are sent in every Assign (may be nil).
	// Limits.Timeout unset means DefaultDownloadTimeout; it is always sent.
	Limits *pb.DownloadLimits
	// Clock tells the time and makes timers; nil means clock.Real{}.
	Clock clock.Clock
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the coordinator's metrics; nil means no metrics.
	Registerer prometheus.Registerer

	// RetryBaseDelay is the backoff before the second attempt; it doubles per failure
	// (default 2s).
	RetryBaseDelay time.Duration
	// RetryMaxDelay caps the backoff (default 5m).
	RetryMaxDelay time.Duration
	// MaxRetryAfter caps how long a Retry-After pauses a host (default 1h); a longer one
	// fails the attempt with HOST_PAUSED.
	MaxRetryAfter time.Duration
	// BreakerThreshold is the number of consecutive host failures, each the first failure of
	// a different paper, that trip a host's circuit breaker (default 10). See breaker.
	BreakerThreshold int
	// BreakerCooldown is the pause of a tripped host (default 30s). It doubles per trip, up
	// to BreakerMaxCooldown, only for a host that does not answer at all.
	BreakerCooldown time.Duration
	// BreakerMaxCooldown caps the pause of a host that does not answer (default 10m).
	BreakerMaxCooldown time.Duration
	// BreakerGiveUp: a breaker open this long without a success gives up on the host: its
	// queued papers fail at once with HOST_PAUSED (default 10m).
	BreakerGiveUp time.Duration
	// InboxSize bounds each of the loop's two inboxes, the clients' and the fetchers' (default
	// 4096); a full client inbox makes API calls fail with RESOURCE_EXHAUSTED, a full fetcher
	// inbox slows the Work streams down.
	InboxSize int
	// StreamBuffer bounds each Work stream's send buffer (default 4096, at least 2×slots+64);
	// a stream whose buffer fills is broken and its leases re-queued.
	StreamBuffer int
	// Retention deletes COMPLETED and CANCELLED batches (and their papers, and blobs no other
	// paper refers to) once they finished more than Retention ago; 0 keeps them forever.
	Retention time.Duration
	// WatchersPerBatch bounds the WatchBatch streams of one batch (default 64); one more is
	// RESOURCE_EXHAUSTED.
	WatchersPerBatch int
	// WatchersPerPeer bounds the WatchBatch streams of one client address (default 32).
	WatchersPerPeer int
	// WatchInterval is the minimum time between two progress updates of a watched batch
	// (default 250ms).
	WatchInterval time.Duration
	// LockTimeout bounds the wait for the store's file lock (default 1s).
	LockTimeout time.Duration
	// Rand is the random source of the retry jitter; nil means a randomly seeded one.
	Rand rand.Source
	// NoSync skips fsync on commits. For tests only: it voids the durability guarantee.
	NoSync bool
}

// RegisterFlags registers the coordinator's tuning flags on fs, bound to c, with the
// defaults as flag defaults. --per-host-delay=0 means no delay.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.PerHostDelay = time.Second
	fs.Func("per-host-delay", "minimum time (a `duration`, e.g. 1s) between request starts on one host (0: none) (default 1s)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		if d <= 0 {
			d = -1
		}
		c.PerHostDelay = d
		return nil
	})
	fs.IntVar(&c.PerHostConcurrency, "per-host-concurrency", 2, "maximum concurrent downloads per host")
	fs.Func("host-limit", "per-host override `HOST=DELAY/CONCURRENCY`, e.g. arxiv.org=3s/1 (repeatable)", HostLimitFlag(&c.HostOverrides))
	fs.IntVar(&c.MaxAttempts, "max-attempts", 5, "failed attempts before a paper fails")
	c.Resolve.RegisterFlags(fs)
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 60*time.Second, "lease lifetime without an event of that lease from its fetcher")
	fs.DurationVar(&c.StartTimeout, "lease-start-timeout", 30*time.Second, "time a fetcher has to report an assigned lease started before it is re-queued")
	fs.DurationVar(&c.DeadlineGrace, "lease-deadline-grace", time.Minute, "added to the download timeout to give each lease's hard deadline")
	fs.DurationVar(&c.ReconnectGrace, "reconnect-grace", 15*time.Second, "after a restart, how long fetchers may re-announce their leases")
	fs.IntVar(&c.MaxBatchPapers, "max-batch-papers", 2_000_000, "maximum papers per batch")
	fs.DurationVar(&c.Retention, "retention", 0, "delete finished batches (their papers, and blobs no other paper uses) this long after they finished (0: keep forever)")
	fs.DurationVar(&c.RetryBaseDelay, "retry-base-delay", 2*time.Second, "backoff before the second attempt (doubles per failure)")
	fs.DurationVar(&c.RetryMaxDelay, "retry-max-delay", 5*time.Minute, "maximum retry backoff")
	fs.DurationVar(&c.MaxRetryAfter, "max-retry-after", time.Hour, "longest Retry-After honoured as a host pause")
	fs.IntVar(&c.BreakerThreshold, "breaker-threshold", 10, "consecutive host failures, each of a different paper, that pause a host (circuit breaker)")
	fs.DurationVar(&c.BreakerCooldown, "breaker-cooldown", 30*time.Second, "pause of a host whose breaker trips (doubles per trip only for a host that does not answer)")
	fs.DurationVar(&c.BreakerMaxCooldown, "breaker-max-cooldown", 10*time.Minute, "longest pause of a host that does not answer")
	fs.DurationVar(&c.BreakerGiveUp, "breaker-give-up", 10*time.Minute, "after this long with the breaker open and no success, a host's queued papers fail at once (HOST_PAUSED)")
	fs.Func("download-max-size", "maximum PDF size in `bytes` sent to fetchers (0: the fetcher's default)", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("invalid size %q", s)
		}
		c.limits().MaxSizeBytes = n
		return nil
	})
	fs.Func("download-timeout", "overall deadline (a `duration`) of one download sent to fetchers (default: the fetcher's)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		c.limits().Timeout = durationpb.New(d)
		return nil
	})
	fs.Func("download-stall-timeout", "stall timeout (a `duration`) of one download sent to fetchers (default: the fetcher's)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		c.limits().StallTimeout = durationpb.New(d)
		return nil
	})
}

func (c *Config) limits() *pb.DownloadLimits {
	if c.Limits == nil {
		c.Limits = &pb.DownloadLimits{}
	}
	return c.Limits
}

// HostLimitFlag returns the parser of a repeatable --host-limit HOST=DELAY/CONCURRENCY flag
// that adds to *dst.
func HostLimitFlag(dst *map[string]HostLimits) func(string) error {
	return func(s string) error {
		name, lim, err := parseHostLimit(s)
		if err != nil {
			return err
		}
		if *dst == nil {
			*dst = make(map[string]HostLimits)
		}
		(*dst)[name] = lim
		return nil
	}
}

// parseHostLimit parses HOST=DELAY/CONCURRENCY (either part may be empty).
func parseHostLimit(s string) (string, HostLimits, error) {
	name, v, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return "", HostLimits{}, fmt.Errorf("host limit %q: want HOST=DELAY/CONCURRENCY", s)
	}
	d, n, _ := strings.Cut(v, "/")
	var lim HostLimits
	if d != "" {
		dd, err := time.ParseDuration(d)
		if err != nil {
			return "", HostLimits{}, fmt.Errorf("host limit %q: %w", s, err)
		}
		if dd <= 0 {
			dd = -1
		}
		lim.Delay = dd
	}
	if n != "" {
		nn, err := strconv.Atoi(n)
		if err != nil || nn < 1 {
			return "", HostLimits{}, fmt.Errorf("host limit %q: concurrency must be a positive integer", s)
		}
		lim.Concurrency = nn
	}
	return strings.ToLower(name), lim, nil
}

// withDefaults returns c with every zero value replaced by its default.
func (c Config) withDefaults() Config {
	if c.PerHostDelay == 0 {
		c.PerHostDelay = time.Second
	}
	if c.PerHostConcurrency <= 0 {
		c.PerHostConcurrency = 2
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.MaxAttempts > 1000 {
		c.MaxAttempts = 1000
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 60 * time.Second
	}
	if c.ReconnectGrace <= 0 {
		c.ReconnectGrace = 15 * time.Second
	}
	if c.MaxBatchPapers <= 0 {
		c.MaxBatchPapers = 2_000_000
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RetryBaseDelay <= 0 {
		c.RetryBaseDelay = 2 * time.Second
	}
	if c.RetryMaxDelay <= 0 {
		c.RetryMaxDelay = 5 * time.Minute
	}
	if c.MaxRetryAfter <= 0 {
		c.MaxRetryAfter = time.Hour
	}
	if c.BreakerThreshold <= 0 {
		c.BreakerThreshold = 10
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = 30 * time.Second
	}
	if c.BreakerMaxCooldown <= 0 {
		c.BreakerMaxCooldown = 10 * time.Minute
	}
	c.BreakerMaxCooldown = max(c.BreakerMaxCooldown, c.BreakerCooldown)
	if c.BreakerGiveUp <= 0 {
		c.BreakerGiveUp = 10 * time.Minute
	}
	if c.InboxSize <= 0 {
		c.InboxSize = 4096
	}
	if c.StreamBuffer <= 0 {
		c.StreamBuffer = 4096
	}
	if c.WatchersPerBatch <= 0 {
		c.WatchersPerBatch = 64
	}
	if c.WatchersPerPeer <= 0 {
		c.WatchersPerPeer = 32
	}
	if c.WatchInterval <= 0 {
		c.WatchInterval = 250 * time.Millisecond
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.DeadlineGrace <= 0 {
		c.DeadlineGrace = time.Minute
	}
	if c.FetcherSilence <= 0 {
		c.FetcherSilence = 30 * time.Second
	}
	if c.StreamRate <= 0 {
		c.StreamRate = 100
	}
	if c.StreamRatePerSlot <= 0 {
		c.StreamRatePerSlot = 1000
	}
	if c.Verifiers <= 0 {
		c.Verifiers = 8
	}
	if c.LockTimeout <= 0 {
		c.LockTimeout = time.Second
	}
	if c.Rand == nil {
		c.Rand = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	c.Resolve = c.Resolve.withDefaults()
	c.apiLimits = c.Resolve.apiHostLimits()
	return c
}

// hostLimits returns the limits of a host key (host or host:port).
func (c *Config) hostLimits(key string) (time.Duration, int) {
	delay, conc := c.PerHostDelay, c.PerHostConcurrency
	lim, ok := c.HostOverrides[key]
	if !ok {
		if h, _, err := net.SplitHostPort(key); err == nil {
			lim, ok = c.HostOverrides[strings.ToLower(h)]
		}
	}
	if !ok {
		lim, ok = c.apiLimits[key]
	}
	if ok {
		if lim.Delay != 0 {
			delay = lim.Delay
		}
		if lim.Concurrency > 0 {
			conc = lim.Concurrency
		}
	}
	if delay < 0 {
		delay = 0
	}
	return delay, conc
}

// DefaultDownloadTimeout is the download timeout sent in Assigns when Config.Limits sets none
// (the fetchers' own default); the coordinator enforces it (plus DeadlineGrace).
const DefaultDownloadTimeout = 15 * time.Minute

// assignLimits returns the limits sent in every Assign: Config.Limits with the timeout set.
func (c *Config) assignLimits() *pb.DownloadLimits {
	l := &pb.DownloadLimits{}
	if c.Limits != nil {
		l = proto.Clone(c.Limits).(*pb.DownloadLimits)
	}
	if t := l.GetTimeout(); t == nil || t.AsDuration() <= 0 {
		l.Timeout = durationpb.New(DefaultDownloadTimeout)
	}
	return l
}
