package embedded

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/fetcher"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/auth"
	"github.com/paperfetch/paperfetch/internal/fielderr"
)

// HostLimits override the politeness limits of one host (--host-limit HOST=DELAY/CONCURRENCY);
// a nil field keeps PerHostDelay or PerHostConcurrency.
type HostLimits = coordinator.HostLimits

// BodyTap receives copies of the downloaded PDFs (Options.Tap): see fetcher.BodyTap.
type BodyTap = fetcher.BodyTap

// TapWriter is one copy of a BodyTap: see fetcher.TapWriter.
type TapWriter = fetcher.TapWriter

// Defaults of Options, as returned by DefaultOptions: the defaults of `paperfetch get`'s flags.
const (
	DefaultFetchers           = 2
	DefaultConcurrency        = 16
	DefaultPerHostConcurrency = coordinator.DefaultPerHostConcurrency
	DefaultPerHostDelay       = coordinator.DefaultPerHostDelay
	DefaultRetries            = 4
	DefaultMaxSize            = fetcher.DefaultMaxSize
	DefaultTimeout            = 10 * time.Minute
	// DefaultDrainGrace is how long Close lets running downloads finish.
	DefaultDrainGrace = 2 * time.Second
	// WatchInterval is the embedded coordinator's coordinator.Config.WatchInterval: its
	// watchers are in-process (get's progress display and placers), so an update costs no
	// network, and the papers of the last one, placed by get after the last download, are at
	// most 100 ms of downloads (the coordinator's 250 ms default: ~650 papers at 2,600 papers/s,
	// 27 ms of two placers' work after the batch completed).
	WatchInterval = 100 * time.Millisecond
)

// Bounds of Options, checked by Validate.
const (
	// MaxFetchers bounds Fetchers.
	MaxFetchers = 64
	// MaxConcurrency bounds Concurrency.
	MaxConcurrency = fetcher.MaxSlots
	// MaxRetries bounds Retries.
	MaxRetries = 100
)

// Options configure an embedded System. The fields that mirror a `paperfetch get` flag (named
// in each comment) mean what the flag means, zero included: PerHostDelay 0 is no delay, as
// --per-host-delay 0 is; Retries 0 is no retry. Start from DefaultOptions (the flags'
// defaults); Start rejects invalid values with an error naming the field (Validate).
type Options struct {
	// Dir holds the coordinator's store (Dir/coordinator.db) and the blobs (Dir/blobs). Created
	// when missing. Required. (`paperfetch get` uses OUT/.paperfetch.)
	Dir string
	// Fetchers is the number of fetchers (--fetchers; 1 to MaxFetchers). A fetcher without a
	// download slot would idle: min(Fetchers, Concurrency) run.
	Fetchers int
	// Concurrency is the total number of parallel downloads, split across the fetchers as
	// evenly as possible (--concurrency; 1 to MaxConcurrency).
	Concurrency int
	// PerHostConcurrency bounds the parallel downloads from one host (--per-host-concurrency).
	PerHostConcurrency int
	// PerHostDelay is the minimum time between two requests to one host (--per-host-delay;
	// 0: none).
	PerHostDelay time.Duration
	// HostLimits are per-host overrides, keyed by host name or host:port in lower case
	// (--host-limit); they override the DOI APIs' own defaults too.
	HostLimits map[string]HostLimits
	// Retries is how many times a failed download is retried (--retries; 0: none).
	Retries int
	// MaxSize bounds the size of one PDF in bytes (--max-size).
	MaxSize int64
	// Timeout is the overall deadline of one download attempt (--timeout).
	Timeout time.Duration
	// UserAgent is the User-Agent header (--user-agent; empty: paperfetch/VERSION with the
	// contact address).
	UserAgent string
	// Email is the contact address sent to the DOI APIs and put in the User-Agent (--email;
	// empty: Unpaywall is skipped and the User-Agent names the project's address).
	Email string
	// ArxivBase, DOIBase, OpenAlexBase and UnpaywallBase are where papers are resolved
	// (--arxiv-base, --doi-base, --openalex-base, --unpaywall-base; empty: the public service).
	ArxivBase, DOIBase, OpenAlexBase, UnpaywallBase string
	// AllowPrivateNetworks lifts the SSRF guard (--allow-private-networks).
	AllowPrivateNetworks bool
	// AllowCIDRs are address ranges reachable despite the SSRF guard (--allow-cidr).
	AllowCIDRs []netip.Prefix
	// Proxy is the proxy every download goes through (--proxy; empty: none), see
	// fetcher.ParseProxy.
	Proxy string
	// Headers are extra request headers of every download (--header).
	Headers http.Header
	// DrainGrace is how long Close lets running downloads finish before aborting them (they
	// are re-queued and resume on the next run); 0 aborts them at once.
	DrainGrace time.Duration

	// Logger receives the logs of every component; nil discards them.
	Logger *slog.Logger
	// Listener, when set, is where the coordinator is served instead of an in-memory
	// listener, so that other processes can reach it (tests, demos). Close closes it.
	Listener net.Listener
	// HTTPListener, when set, serves the web dashboard and the /v1/ JSON API (package
	// dashboard) of the embedded coordinator (--dashboard), with the gRPC server's connection
	// limits (grpcserver.DefaultMaxConnsPerIP per address). Close closes it.
	HTTPListener net.Listener
	// ClientTokens, when set, makes CoordinatorService calls (gRPC, /v1/ and the dashboard's
	// data) require one of these bearer tokens, as the coordinator's --tokens does. The
	// fetchers' gateway stays open. For tests and demos of the authenticated paths.
	ClientTokens auth.TokenChecker
	// Tap, when set, receives a copy of every PDF the fetchers download for a paper, written
	// as it is received, by the writes that hash it, and finished once its blob is committed
	// (fetcher.Config.Tap): `paperfetch get` writes its output files with it. Nil: none.
	Tap BodyTap

	// TuneCoordinator and TuneFetcher, when set, adjust the coordinator's and every fetcher's
	// configuration after it was derived from the options, for what the options do not cover
	// (tests: NoSync, retry delays, watch intervals). The result is validated.
	TuneCoordinator func(*coordinator.Config)
	// TuneFetcher: see TuneCoordinator.
	TuneFetcher func(*fetcher.Config)
}

// DefaultOptions returns the defaults of `paperfetch get`'s flags. Dir must still be set.
func DefaultOptions() Options {
	return Options{
		Fetchers:           DefaultFetchers,
		Concurrency:        DefaultConcurrency,
		PerHostConcurrency: DefaultPerHostConcurrency,
		PerHostDelay:       DefaultPerHostDelay,
		Retries:            DefaultRetries,
		MaxSize:            DefaultMaxSize,
		Timeout:            DefaultTimeout,
		DrainGrace:         DefaultDrainGrace,
	}
}

// Validate checks the options, returning an error that names each invalid field and its flag
// (nil when all are valid). Start also validates the configurations derived from them.
func (o *Options) Validate() error {
	var v fielderr.List
	if o.Dir == "" {
		v.Add("Options.Dir", "", "is required")
	}
	v.Range("Options.Fetchers", "fetchers", int64(o.Fetchers), 1, MaxFetchers)
	v.Range("Options.Concurrency", "concurrency", int64(o.Concurrency), 1, MaxConcurrency)
	v.Range("Options.PerHostConcurrency", "per-host-concurrency", int64(o.PerHostConcurrency), 1, coordinator.MaxPerHostConcurrency)
	v.NonNegative("Options.PerHostDelay", "per-host-delay", o.PerHostDelay)
	v.Range("Options.Retries", "retries", int64(o.Retries), 0, MaxRetries)
	v.AtLeast("Options.MaxSize", "max-size", o.MaxSize, 1)
	v.Positive("Options.Timeout", "timeout", o.Timeout)
	if o.Proxy != "" {
		if _, _, err := fetcher.ParseProxy(o.Proxy); err != nil {
			v.Add("Options.Proxy", "proxy", "%v", err)
		}
	}
	v.Join(o.resolve().Validate()) // its errors name the flags (--doi-base...)
	v.NonNegative("Options.DrainGrace", "", o.DrainGrace)
	return v.Err("invalid options")
}

// resolve returns the DOI routes' configuration.
func (o *Options) resolve() coordinator.ResolveConfig {
	return coordinator.ResolveConfig{ArxivBase: o.ArxivBase, DOIBase: o.DOIBase, OpenAlexBase: o.OpenAlexBase,
		UnpaywallBase: o.UnpaywallBase, Email: o.Email}
}

// coordinatorConfig derives the coordinator's configuration (without DataDir, Bucket and
// Logger, set by Start). No fetcher of a previous run survives it to re-announce its leases:
// its reconnect grace is 0.
func (o *Options) coordinatorConfig() coordinator.Config {
	c := coordinator.DefaultConfig()
	c.PerHostDelay = o.PerHostDelay
	c.PerHostConcurrency = o.PerHostConcurrency
	c.HostOverrides = o.HostLimits
	c.MaxAttempts = o.Retries + 1
	c.Resolve = o.resolve()
	c.ReconnectGrace = 0
	c.WatchInterval = WatchInterval
	c.Limits = &pb.DownloadLimits{MaxSizeBytes: o.MaxSize, Timeout: durationpb.New(o.Timeout)}
	if o.TuneCoordinator != nil {
		o.TuneCoordinator(&c)
	}
	return c
}

// fetcherConfig derives the template of every fetcher's configuration (without ID, Slots,
// Bucket and Logger, set by Start).
func (o *Options) fetcherConfig() (fetcher.Config, error) {
	c := fetcher.DefaultConfig()
	c.AllowPrivateNetworks = o.AllowPrivateNetworks
	c.AllowCIDRs = o.AllowCIDRs
	c.Headers = o.Headers
	c.UserAgent = o.UserAgent
	if o.Email != "" {
		c.Contact = o.Email
	}
	c.MaxSize = o.MaxSize
	c.Timeout = o.Timeout
	c.DrainGrace = o.DrainGrace
	c.Tap = o.Tap
	if o.Proxy != "" {
		var err error
		if c.Proxy, c.ProxyMode, err = fetcher.ParseProxy(o.Proxy); err != nil {
			return fetcher.Config{}, fmt.Errorf("embedded: --proxy: %w", err)
		}
	}
	if o.TuneFetcher != nil {
		o.TuneFetcher(&c)
	}
	return c, nil
}

// NewResolver returns a resolver of DOI routes configured like the system's fetchers by the
// options (the SSRF guard, proxy, headers, User-Agent with Email, Timeout per request):
// `paperfetch resolve` uses it. The DOI routes' bases are checked; Dir and the counts are not
// needed.
func NewResolver(o Options) (*fetcher.Resolver, error) {
	if err := o.resolve().Validate(); err != nil {
		return nil, err
	}
	c, err := o.fetcherConfig()
	if err != nil {
		return nil, err
	}
	c.Logger = o.Logger
	return fetcher.NewResolver(c)
}

// ErrStoreLocked is returned (wrapped) by Start when another process holds the store in Dir.
var ErrStoreLocked = coordinator.ErrStoreLocked

// Default bases of the DOI routes (what empty ArxivBase, DOIBase, OpenAlexBase and
// UnpaywallBase mean).
const (
	DefaultArxivBase     = coordinator.DefaultArxivBase
	DefaultDOIBase       = coordinator.DefaultDOIBase
	DefaultOpenAlexBase  = coordinator.DefaultOpenAlexBase
	DefaultUnpaywallBase = coordinator.DefaultUnpaywallBase
)

// HostLimitFlag returns the parser of a repeatable --host-limit HOST=DELAY/CONCURRENCY flag
// (for flag.FlagSet.Func) that adds to *dst (Options.HostLimits).
func HostLimitFlag(dst *map[string]HostLimits) func(string) error {
	return coordinator.HostLimitFlag(dst)
}

// AllowCIDRUsage is the help text of an --allow-cidr flag parsed by AllowCIDRFlag.
const AllowCIDRUsage = fetcher.AllowCIDRUsage

// AllowCIDRFlag returns the parser of a repeatable --allow-cidr flag (one or more
// comma-separated CIDRs) that appends to *dst (Options.AllowCIDRs).
func AllowCIDRFlag(dst *[]netip.Prefix) func(string) error {
	return fetcher.AllowCIDRFlag(dst)
}

// HeaderFlag returns the parser of a repeatable --header 'NAME: VALUE' flag that adds to *dst
// (Options.Headers): each header is checked by fetcher.ParseHeader, at most
// fetcher.MaxHeaders of them (values, counted across names: one name repeated is bounded too).
func HeaderFlag(dst *http.Header) func(string) error {
	return func(v string) error {
		k, val, err := fetcher.ParseHeader(v)
		if err != nil {
			return err
		}
		if *dst == nil {
			*dst = http.Header{}
		}
		n := 0
		for _, vs := range *dst {
			n += len(vs)
		}
		if n >= fetcher.MaxHeaders {
			return fmt.Errorf("at most %d headers", fetcher.MaxHeaders)
		}
		dst.Add(k, val)
		return nil
	}
}
