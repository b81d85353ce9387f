package coordinator

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
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
	"github.com/paperfetch/paperfetch/internal/fielderr"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// HostLimits override the politeness limits of one host. A nil field keeps the Config-wide
// value (PerHostDelay, PerHostConcurrency).
type HostLimits struct {
	// Delay is the minimum time between two request starts on the host; 0 means none.
	Delay *time.Duration
	// Concurrency is the maximum number of concurrent downloads from the host (at least 1).
	Concurrency *int
}

// Defaults of Config, as returned by DefaultConfig (and the coordinator's flag defaults).
const (
	DefaultPerHostDelay       = time.Second
	DefaultPerHostConcurrency = 2
	DefaultMaxAttempts        = 5
	DefaultLeaseTTL           = 60 * time.Second
	DefaultStartTimeout       = 30 * time.Second
	DefaultDeadlineGrace      = time.Minute
	DefaultFetcherSilence     = 30 * time.Second
	DefaultReconnectGrace     = 15 * time.Second
	DefaultMaxBatchPapers     = 2_000_000
	DefaultRetryBaseDelay     = 2 * time.Second
	DefaultRetryMaxDelay      = 5 * time.Minute
	DefaultMaxRetryAfter      = time.Hour
	DefaultBreakerThreshold   = 10
	DefaultBreakerCooldown    = 30 * time.Second
	DefaultBreakerMaxCooldown = 10 * time.Minute
	DefaultBreakerGiveUp      = 10 * time.Minute
	DefaultInboxSize          = 4096
	DefaultStreamBuffer       = 4096
	DefaultWatchersPerBatch   = 64
	DefaultWatchersPerPeer    = 32
	DefaultWatchInterval      = 250 * time.Millisecond
	DefaultLockTimeout        = time.Second
	DefaultStreamRate         = 100
	DefaultStreamRatePerSlot  = 1000
	DefaultVerifiers          = 8
	DefaultCommitWindow       = 10 * time.Millisecond
)

// Upper bounds of Config, checked by Validate.
const (
	// MaxMaxAttempts bounds MaxAttempts (a paper's attempt counters are 16-bit and a paper may
	// lose up to 4×MaxAttempts leases).
	MaxMaxAttempts = 1000
	// MaxPerHostConcurrency bounds PerHostConcurrency and HostLimits.Concurrency.
	MaxPerHostConcurrency = 1 << 16
	// MaxQueueSize bounds InboxSize and StreamBuffer.
	MaxQueueSize = 1 << 20
	// MaxVerifiers bounds Verifiers.
	MaxVerifiers = 1024
	// MaxWatchers bounds WatchersPerBatch and WatchersPerPeer.
	MaxWatchers = 1 << 16
	// MaxCommitWindow bounds CommitWindow: every Assign and Ack may wait that much longer, and
	// a fetcher's prefetched leases and pending commits must outlast it.
	MaxCommitWindow = 100 * time.Millisecond
)

// Config configures a Coordinator. Start from DefaultConfig: a value means what it says
// (zero is zero: PerHostDelay 0 is no delay, ReconnectGrace 0 no grace), and Open rejects
// invalid values with an error naming the field (Validate) instead of replacing them. Only
// nil pointers and interfaces (Bucket, Limits, Clock, Logger, Registerer, Rand) have a
// documented meaning of their own.
type Config struct {
	// DataDir holds the store, DataDir/coordinator.db (created).
	DataDir string
	// Bucket is the blob store ReadPaper reads from, and against which completions reported by
	// fetchers are verified (the blob must exist with the reported size before the paper is
	// SUCCEEDED). It must be the fetchers' blob store. nil makes ReadPaper FAILED_PRECONDITION
	// and completions are then believed unverified.
	Bucket *blob.Bucket
	// BucketURL is the URL Bucket was opened from, or "" when unknown. For a file:// bucket,
	// completions are verified with a stat(2) of the blob's file (blobstore.LocalPath)
	// instead of through the blob store's API: the same check at a fraction of the CPU (the
	// API also looks for an attributes file and records a trace span per call).
	BucketURL string
	// StreamRate and StreamRatePerSlot bound the messages per second of one Work stream:
	// StreamRate + StreamRatePerSlot × Hello.slots, bursts of twice that (defaults 100 and
	// 1000: a slot downloading small PDFs from a fast origin finishes hundreds a second, with
	// about four messages each); a faster stream is throttled (budgets.go). StreamRate must
	// be positive, StreamRatePerSlot not negative.
	StreamRate, StreamRatePerSlot float64
	// Verifiers is the number of goroutines checking completions against Bucket (default 8;
	// 1 to MaxVerifiers).
	Verifiers int
	// PerHostDelay is the minimum time between request starts on one host (default 1s);
	// 0 means no delay.
	PerHostDelay time.Duration
	// PerHostConcurrency is the maximum number of concurrent downloads per host (default 2;
	// 1 to MaxPerHostConcurrency).
	PerHostConcurrency int
	// HostOverrides are per-host limits, keyed by host name or host:port.
	HostOverrides map[string]HostLimits
	// Resolve says where DOIs are resolved; its API hosts get their own politeness defaults
	// (see ResolveConfig.apiHostLimits) unless HostOverrides names them.
	Resolve ResolveConfig
	// apiLimits are Resolve's host defaults, computed by withDefaults.
	apiLimits map[string]HostLimits
	// MaxAttempts is how many failed attempts a paper may have before it fails (default 5;
	// 1 to MaxMaxAttempts).
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
	// before those are re-queued (default 15s; 0: at once, for a coordinator whose fetchers
	// never outlive it, like the embedded one).
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
	// paper refers to) once they finished more than Retention ago; 0 keeps them forever
	// (the default).
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
	// CommitWindow groups the store commits of fetcher traffic (default 10ms; 0 to
	// MaxCommitWindow). When the previous commit started less than CommitWindow ago, the loop
	// keeps applying Work stream events (and verifier and collector answers) until
	// CommitWindow after that start before it commits them all in one fsynced transaction, so
	// a busy coordinator commits at most once per window instead of once per loop iteration;
	// when the previous commit is older, nothing waits. A client request that writes ends the
	// window at once (reads are answered during it). Nothing is sent before its commit
	// (persist before send): an Assign or an Ack waits at most CommitWindow longer, which the
	// fetchers' prefetch window and pending commits absorb. 0 commits as soon as the previous
	// commit returned. Tests on a fake clock that does not advance set 0: the window ends on
	// the coordinator's clock.
	CommitWindow time.Duration
	// Rand is the random source of the retry jitter; nil means a randomly seeded one.
	Rand rand.Source
	// NoSync skips fsync on commits. For tests only: it voids the durability guarantee.
	NoSync bool
}

// DefaultConfig returns the default configuration (the Default… constants; the DOI routes'
// default bases). DataDir must still be set.
func DefaultConfig() Config {
	return Config{
		StreamRate:         DefaultStreamRate,
		StreamRatePerSlot:  DefaultStreamRatePerSlot,
		Verifiers:          DefaultVerifiers,
		PerHostDelay:       DefaultPerHostDelay,
		PerHostConcurrency: DefaultPerHostConcurrency,
		Resolve:            DefaultResolveConfig(),
		MaxAttempts:        DefaultMaxAttempts,
		LeaseTTL:           DefaultLeaseTTL,
		StartTimeout:       DefaultStartTimeout,
		DeadlineGrace:      DefaultDeadlineGrace,
		FetcherSilence:     DefaultFetcherSilence,
		ReconnectGrace:     DefaultReconnectGrace,
		MaxBatchPapers:     DefaultMaxBatchPapers,
		RetryBaseDelay:     DefaultRetryBaseDelay,
		RetryMaxDelay:      DefaultRetryMaxDelay,
		MaxRetryAfter:      DefaultMaxRetryAfter,
		BreakerThreshold:   DefaultBreakerThreshold,
		BreakerCooldown:    DefaultBreakerCooldown,
		BreakerMaxCooldown: DefaultBreakerMaxCooldown,
		BreakerGiveUp:      DefaultBreakerGiveUp,
		InboxSize:          DefaultInboxSize,
		StreamBuffer:       DefaultStreamBuffer,
		WatchersPerBatch:   DefaultWatchersPerBatch,
		WatchersPerPeer:    DefaultWatchersPerPeer,
		WatchInterval:      DefaultWatchInterval,
		LockTimeout:        DefaultLockTimeout,
		CommitWindow:       DefaultCommitWindow,
	}
}

// RegisterFlags registers the coordinator's tuning flags on fs, bound to c, with c's current
// values as flag defaults (start from DefaultConfig). --per-host-delay=0 means no delay.
// Values are checked by Validate (Open calls it), not by the flag parsers.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.PerHostDelay, "per-host-delay", c.PerHostDelay, "minimum time between request starts on one host (0: none)")
	fs.IntVar(&c.PerHostConcurrency, "per-host-concurrency", c.PerHostConcurrency, "maximum concurrent downloads per host")
	fs.Func("host-limit", "per-host override `HOST=DELAY/CONCURRENCY`, e.g. arxiv.org=3s/1 (repeatable)", HostLimitFlag(&c.HostOverrides))
	fs.IntVar(&c.MaxAttempts, "max-attempts", c.MaxAttempts, "failed attempts before a paper fails")
	c.Resolve.RegisterFlags(fs)
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "lease lifetime without an event of that lease from its fetcher")
	fs.DurationVar(&c.StartTimeout, "lease-start-timeout", c.StartTimeout, "time a fetcher has to report an assigned lease started before it is re-queued")
	fs.DurationVar(&c.DeadlineGrace, "lease-deadline-grace", c.DeadlineGrace, "added to the download timeout to give each lease's hard deadline")
	fs.DurationVar(&c.ReconnectGrace, "reconnect-grace", c.ReconnectGrace, "after a restart, how long fetchers may re-announce their leases")
	fs.DurationVar(&c.CommitWindow, "commit-window", c.CommitWindow, fmt.Sprintf("under load, the least time between the starts of two store commits: fetcher events arriving meanwhile join the next commit (0: commit as soon as the previous one returned; at most %v)", MaxCommitWindow))
	fs.IntVar(&c.MaxBatchPapers, "max-batch-papers", c.MaxBatchPapers, "maximum papers per batch")
	fs.DurationVar(&c.Retention, "retention", c.Retention, "delete finished batches (their papers, and blobs no other paper uses) this long after they finished (0: keep forever)")
	fs.DurationVar(&c.RetryBaseDelay, "retry-base-delay", c.RetryBaseDelay, "backoff before the second attempt (doubles per failure)")
	fs.DurationVar(&c.RetryMaxDelay, "retry-max-delay", c.RetryMaxDelay, "maximum retry backoff")
	fs.DurationVar(&c.MaxRetryAfter, "max-retry-after", c.MaxRetryAfter, "longest Retry-After honoured as a host pause")
	fs.IntVar(&c.BreakerThreshold, "breaker-threshold", c.BreakerThreshold, "consecutive host failures, each of a different paper, that pause a host (circuit breaker)")
	fs.DurationVar(&c.BreakerCooldown, "breaker-cooldown", c.BreakerCooldown, "pause of a host whose breaker trips (doubles per trip only for a host that does not answer)")
	fs.DurationVar(&c.BreakerMaxCooldown, "breaker-max-cooldown", c.BreakerMaxCooldown, "longest pause of a host that does not answer")
	fs.DurationVar(&c.BreakerGiveUp, "breaker-give-up", c.BreakerGiveUp, "after this long with the breaker open and no success, a host's queued papers fail at once (HOST_PAUSED)")
	fs.Func("download-max-size", "maximum PDF size in `bytes` sent to fetchers (0: the fetcher's default)", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
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

// parseHostLimit parses HOST=DELAY/CONCURRENCY (either part may be empty: it keeps the
// Config-wide value). DELAY 0 means none.
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
		if dd < 0 {
			return "", HostLimits{}, fmt.Errorf("host limit %q: the delay must not be negative", s)
		}
		lim.Delay = &dd
	}
	if n != "" {
		nn, err := strconv.Atoi(n)
		if err != nil || nn < 1 || nn > MaxPerHostConcurrency {
			return "", HostLimits{}, fmt.Errorf("host limit %q: concurrency must be an integer from 1 to %d", s, MaxPerHostConcurrency)
		}
		lim.Concurrency = &nn
	}
	return strings.ToLower(name), lim, nil
}

// Validate checks every field, returning an error that names each invalid one (nil when all
// are valid). Open calls it; nothing is clamped or replaced.
func (c *Config) Validate() error {
	var v fielderr.List
	if c.DataDir == "" {
		v.Add("Config.DataDir", "", "is required")
	}
	if math.IsNaN(c.StreamRate) || math.IsInf(c.StreamRate, 0) || c.StreamRate <= 0 {
		v.Add("Config.StreamRate", "", "must be a positive finite number, got %v", c.StreamRate)
	}
	if math.IsNaN(c.StreamRatePerSlot) || math.IsInf(c.StreamRatePerSlot, 0) || c.StreamRatePerSlot < 0 {
		v.Add("Config.StreamRatePerSlot", "", "must be a finite number, not negative, got %v", c.StreamRatePerSlot)
	}
	v.Range("Config.Verifiers", "", int64(c.Verifiers), 1, MaxVerifiers)
	v.NonNegative("Config.PerHostDelay", "per-host-delay", c.PerHostDelay)
	v.Range("Config.PerHostConcurrency", "per-host-concurrency", int64(c.PerHostConcurrency), 1, MaxPerHostConcurrency)
	for name, lim := range c.HostOverrides {
		field := fmt.Sprintf("Config.HostOverrides[%q]", name)
		if name == "" || name != strings.ToLower(name) {
			v.Add(field, "host-limit", "host names are non-empty and in lower case")
		}
		if lim.Delay != nil {
			v.NonNegative(field+".Delay", "host-limit", *lim.Delay)
		}
		if lim.Concurrency != nil {
			v.Range(field+".Concurrency", "host-limit", int64(*lim.Concurrency), 1, MaxPerHostConcurrency)
		}
	}
	if err := c.Resolve.Validate(); err != nil {
		v.Add("Config.Resolve", "", "%v", err)
	}
	v.Range("Config.MaxAttempts", "max-attempts", int64(c.MaxAttempts), 1, MaxMaxAttempts)
	v.Positive("Config.LeaseTTL", "lease-ttl", c.LeaseTTL)
	v.Positive("Config.StartTimeout", "lease-start-timeout", c.StartTimeout)
	v.NonNegative("Config.DeadlineGrace", "lease-deadline-grace", c.DeadlineGrace)
	v.Positive("Config.FetcherSilence", "", c.FetcherSilence)
	v.NonNegative("Config.ReconnectGrace", "reconnect-grace", c.ReconnectGrace)
	v.Range("Config.MaxBatchPapers", "max-batch-papers", int64(c.MaxBatchPapers), 1, math.MaxInt32)
	if l := c.Limits; l != nil {
		if l.GetMaxSizeBytes() < 0 {
			v.Add("Config.Limits.MaxSizeBytes", "download-max-size", "must not be negative, got %d", l.GetMaxSizeBytes())
		}
		if l.Timeout != nil && (l.Timeout.CheckValid() != nil || l.Timeout.AsDuration() <= 0) {
			v.Add("Config.Limits.Timeout", "download-timeout", "must be positive, got %v", l.Timeout.AsDuration())
		}
		if l.StallTimeout != nil && (l.StallTimeout.CheckValid() != nil || l.StallTimeout.AsDuration() <= 0) {
			v.Add("Config.Limits.StallTimeout", "download-stall-timeout", "must be positive, got %v", l.StallTimeout.AsDuration())
		}
	}
	v.NonNegative("Config.RetryBaseDelay", "retry-base-delay", c.RetryBaseDelay)
	v.NonNegative("Config.RetryMaxDelay", "retry-max-delay", c.RetryMaxDelay)
	if c.RetryMaxDelay < c.RetryBaseDelay {
		v.Add("Config.RetryMaxDelay", "retry-max-delay", "must be at least RetryBaseDelay (%v), got %v", c.RetryBaseDelay, c.RetryMaxDelay)
	}
	v.NonNegative("Config.MaxRetryAfter", "max-retry-after", c.MaxRetryAfter)
	v.Range("Config.BreakerThreshold", "breaker-threshold", int64(c.BreakerThreshold), 1, math.MaxInt32)
	v.Positive("Config.BreakerCooldown", "breaker-cooldown", c.BreakerCooldown)
	v.Positive("Config.BreakerMaxCooldown", "breaker-max-cooldown", c.BreakerMaxCooldown)
	if c.BreakerMaxCooldown < c.BreakerCooldown {
		v.Add("Config.BreakerMaxCooldown", "breaker-max-cooldown", "must be at least BreakerCooldown (%v), got %v", c.BreakerCooldown, c.BreakerMaxCooldown)
	}
	v.Positive("Config.BreakerGiveUp", "breaker-give-up", c.BreakerGiveUp)
	v.Range("Config.InboxSize", "", int64(c.InboxSize), 1, MaxQueueSize)
	v.Range("Config.StreamBuffer", "", int64(c.StreamBuffer), 1, MaxQueueSize)
	v.NonNegative("Config.Retention", "retention", c.Retention)
	v.Range("Config.WatchersPerBatch", "", int64(c.WatchersPerBatch), 1, MaxWatchers)
	v.Range("Config.WatchersPerPeer", "", int64(c.WatchersPerPeer), 1, MaxWatchers)
	v.Positive("Config.WatchInterval", "", c.WatchInterval)
	v.Positive("Config.LockTimeout", "", c.LockTimeout)
	if c.CommitWindow < 0 || c.CommitWindow > MaxCommitWindow {
		v.Add("Config.CommitWindow", "commit-window", "must be from 0 to %v, got %v", MaxCommitWindow, c.CommitWindow)
	}
	return v.Err("invalid configuration")
}

// withDefaults returns c with its nil fields (Clock, Logger, Rand) given their documented
// meaning and the derived fields computed. It replaces no value that was set.
func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	c.Resolve = c.Resolve.withDefaults()
	c.apiLimits = c.Resolve.apiHostLimits()
	return c
}

// hostLimits returns the limits of a host key (host or host:port): HostOverrides (by key, then
// by host name), else the DOI routes' defaults, over PerHostDelay and PerHostConcurrency.
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
		if lim.Delay != nil {
			delay = *lim.Delay
		}
		if lim.Concurrency != nil {
			conc = *lim.Concurrency
		}
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
