package fetcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"gocloud.dev/blob"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/fielderr"
	"github.com/paperfetch/paperfetch/internal/validate"
	"github.com/paperfetch/paperfetch/internal/version"
)

// Defaults of Config, as returned by DefaultConfig (and the fetcher's flag defaults).
const (
	DefaultSlots             = 16
	DefaultMaxSize           = 512 << 20
	DefaultTimeout           = 15 * time.Minute
	DefaultStallTimeout      = 60 * time.Second
	DefaultConnectTimeout    = 10 * time.Second
	DefaultTLSTimeout        = 10 * time.Second
	DefaultHeaderTimeout     = 30 * time.Second
	DefaultMaxRedirects      = 10
	DefaultDrainGrace        = 30 * time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultReconnectMin      = 250 * time.Millisecond
	// DefaultReconnectMax caps the reconnect backoff well below the coordinator's default
	// --reconnect-grace (15s): after a coordinator restart every fetcher is back, and
	// re-announces its running downloads, within the grace.
	DefaultReconnectMax = 5 * time.Second
	// DefaultIDConflictBackoff is the wait before a fetcher whose id is refused (another live
	// process holds it, or its credentials do not allow it) tries again.
	DefaultIDConflictBackoff = 30 * time.Second
	DefaultSpoolMaxAge       = time.Hour
	DefaultSpoolSweep        = 5 * time.Minute
	DefaultResumeMinBytes    = 1 << 20
	DefaultMaxFetchCalls     = 4
	// DefaultPendingCommits bounds the received bodies being made durable at once, off the
	// download slots. With group commits (blobstore.SyncGroup) it also bounds how many
	// commits can share a group: at 16 per fetcher the commits were the bottleneck of
	// `paperfetch get` of 10,000 × 20 KiB (groups of 9.5 on average); at 64, in 6 alternating
	// rounds, it issued 5.5 block requests per paper instead of 8.4 and took 0.83 of the wall
	// and CPU time (128 measured the same as 64; per-file commits the same at 16 and 64;
	// bench/ANALYSIS.md "Group commit with syncfs"). Each pending commit holds an open spool file.
	DefaultPendingCommits = 64
	// DefaultBlobSyncWindow is Config.BlobSyncWindow's default. Under load a group took what
	// queued while the previous one ran (its two syncfs(2) calls and a sync_file_range wait
	// per file): `paperfetch get` of 10,000 × 20 KiB made 0.067-0.078 syncfs calls per paper
	// (groups of ~28) at load 11-16, 0.155-0.222 (groups of 9-13) at load 3; with 25ms,
	// 0.041-0.050 and 0.051-0.056; with 10ms 0.046-0.061 at load 11-16 (bench/ANALYSIS.md,
	// "A gathering window for the fetchers' group commits"). A commit waits at most this much
	// longer; the download slots do not wait for it.
	DefaultBlobSyncWindow = 25 * time.Millisecond
	// DefaultPrefetch is the prefetch window: leases held beyond the running downloads, each
	// waiting to take the slot of a running download of the same host once its body is in,
	// so that the slot starts its next download without a round trip to the coordinator. One
	// per slot of a default fetcher (DefaultSlots): a slot without a successor idles for a
	// round trip when its body is in.
	DefaultPrefetch = 16
	DefaultContact  = "paperfetch@users.noreply.github.com"
)

// Version is reported in Hello and in the default User-Agent: the binaries' release version.
var Version = version.Version

// Config configures a Fetcher. Start from DefaultConfig: a value means what it says (zero is
// zero: ResumeMinBytes 0 keeps every partial download, MaxRedirects 0 follows none), and New
// rejects invalid values with an error naming the field (Validate) instead of replacing them.
// Only ID, UserAgent, SpoolDir and the nil fields (Bucket, Committer, Proxy, LookupIP, Clock,
// Logger, Registerer, Tap) have a documented meaning of their own when empty.
type Config struct {
	// ID is the id of the fetcher process on the Work stream: 1 to 128 bytes of printable
	// UTF-8 without white space. One id has one live process: the coordinator refuses a second
	// process claiming a live id (ALREADY_EXISTS). Default: "<hostname>-<8 random hex digits>",
	// unique per process, so several fetchers on one machine never collide; a restarted
	// process is a new fetcher.
	ID string
	// Slots is how many downloads run at once (the initial credit); default 16.
	Slots int
	// PendingCommits bounds the received bodies waiting for, or running, their commit (making
	// the blob durable, then reporting completed): a slot whose body is in frees up for its next
	// download once it takes a place here, and waits while all places are taken (1 to
	// MaxSlots; default DefaultPendingCommits).
	PendingCommits int
	// Prefetch is the prefetch window (Hello.prefetch): how many leases the fetcher holds
	// beyond its running downloads, each the successor of a running download of the same host
	// (or of a waiting successor: a chain) whose slot it takes once that download's body is in,
	// without waiting for a round trip to the coordinator (0 turns prefetch off; 0 to
	// MaxPrefetch; default DefaultPrefetch). A
	// successor that starts while its predecessor's slot was already handed back makes the
	// fetcher withhold the next credit, so at most Slots + Prefetch downloads run at once. A
	// successor assigned beyond Prefetch waiting ones is handed back at once (failed ABORTED).
	// A successor leaves the window once its predecessor's body is in (as on the coordinator,
	// which counts it against its host from then on), even while that slot waits for a place
	// among the PendingCommits: so at most Prefetch + Slots successors wait (one more per
	// download beyond Slots after a reconnect that found every slot busy: a Hello announces
	// at least one credit).
	Prefetch int
	// MaxFetchCalls bounds the FetcherService.Fetch calls running at once (operators'
	// debugging downloads, on top of Slots); one more is RESOURCE_EXHAUSTED. Default 4.
	MaxFetchCalls int
	// Bucket is where PDFs are stored, under content-addressed keys. Required.
	Bucket *blob.Bucket
	// BlobURL is the URL Bucket was opened from. When it is a file:// URL, the fetcher writes
	// objects itself: it downloads into a hidden temporary file inside the bucket folder, then
	// syncs and renames it into place (no copy, durable before "completed" is reported).
	// Without it every object goes through Bucket's writer from a local spool file.
	BlobURL string
	// BlobSync is how commits into a file:// bucket are made durable (--blob-sync):
	// blobstore.SyncGroup (default, blobstore.DefaultSyncMode: concurrent commits share
	// syncfs(2) calls; per-file where syncfs does not exist) or blobstore.SyncPerFile
	// (fdatasync and a folder fsync per commit). Group commits cost about half the disk
	// requests and CPU of per-file ones, but syncfs(2) also writes other processes' dirty
	// pages of the bucket's file system, so on a disk shared with heavy writers per-file
	// commits wait less; see blobstore.DefaultSyncMode. In group mode a body of
	// blobstore.LargeCommit bytes or more is committed per file all the same. Ignored for
	// other buckets.
	BlobSync blobstore.SyncMode
	// BlobSyncWindow is the gathering window of group commits (--blob-sync-window; 0 to
	// blobstore.MaxWindow; default DefaultBlobSyncWindow): a group of commits starts no sooner
	// than this after the previous group started, or at once when half the PendingCommits are
	// queued for it (so a slot never waits for the window), so that more commits share its two
	// syncfs(2) calls. A commit, never a download, waits up to this much longer; 0 starts a
	// group as soon as the previous one ended. Only with BlobSync group and a file:// bucket.
	BlobSyncWindow time.Duration
	// Committer, when set, commits into the file:// bucket at BlobURL instead of a committer
	// of this fetcher's own: fetchers of one process writing to the same bucket folder share
	// it, so that their concurrent commits share groups (its mode is used, not BlobSync). It
	// must have been made with blobstore.NewCommitter for that folder. Ignored for other
	// buckets.
	Committer *blobstore.Committer
	// SpoolDir holds partial downloads (kept for resuming) when the bucket is not a file://
	// bucket; default $TMPDIR/paperfetch-spool. For file:// buckets the spool is inside the
	// bucket folder (see blobstore.TempDir), so committing is a rename.
	SpoolDir string
	// SpoolMaxAge: spool and temporary files not modified for this long are removed, at start
	// and by a periodic sweep while Run runs (those of killed fetchers, partials never resumed);
	// default 1h. Files of running downloads are never removed (each write refreshes a file's
	// modification time), and a partial kept for a resume ages from its last write, so this
	// must be well above the coordinator's longest retry backoff.
	SpoolMaxAge time.Duration
	// SpoolSweepInterval is the period of that sweep; default 5m.
	SpoolSweepInterval time.Duration
	// ResumeMinBytes: a failed download keeps its partial body for a Range resume only when at
	// least this many bytes arrived and the origin sent a validator (ETag/Last-Modified);
	// default 1 MiB.
	ResumeMinBytes int64
	// AllowPrivateNetworks lifts the SSRF guard entirely (tests, local use).
	AllowPrivateNetworks bool
	// AllowCIDRs are address ranges reachable despite the SSRF guard.
	AllowCIDRs []netip.Prefix
	// Proxy, when set, is the proxy every download goes through, used as ProxyMode says (see
	// ParseProxy and proxy.go for what the SSRF guard can still check).
	Proxy *url.URL
	// ProxyMode is how Proxy is used (ProxyForward or ProxyPrefix).
	ProxyMode ProxyMode
	// Headers are extra request headers of every download (an API key, a session cookie the
	// user holds): at most MaxHeaders, each checked by ParseHeader. They are sent to every
	// host of the downloads (not to DOI resolution APIs).
	Headers http.Header
	// UserAgent is the User-Agent header; default "paperfetch/<version> (+<repo>; mailto:<Contact>)".
	UserAgent string
	// Contact is the e-mail address put in the default User-Agent (default DefaultContact;
	// empty: none).
	Contact string
	// MaxSize is the default maximum body size in bytes; default 512 MiB.
	MaxSize int64
	// Timeout is the default overall deadline of a download (default 15m).
	Timeout time.Duration
	// StallTimeout is the default time without a byte after which a download is abandoned
	// (default 60s).
	StallTimeout time.Duration
	// ConnectTimeout bounds the TCP connect (default 10s).
	ConnectTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake (default 10s).
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers after the request is sent
	// (default 30s).
	ResponseHeaderTimeout time.Duration
	// MaxRedirects is the redirect limit; default 10, 0 follows none.
	MaxRedirects int
	// DrainGrace is how long Drain lets running downloads finish (used by cmd/fetcher;
	// default 30s; 0 aborts them at once).
	DrainGrace time.Duration
	// HeartbeatInterval: a Heartbeat is sent when nothing else was sent for this long
	// (default 10s).
	HeartbeatInterval time.Duration
	// ReconnectMin and ReconnectMax bound the exponential reconnect backoff (with jitter);
	// keep ReconnectMax below the coordinator's --reconnect-grace (defaults 250ms and 5s).
	ReconnectMin, ReconnectMax time.Duration
	// IDConflictBackoff is the wait after the coordinator refused the id (default 30s).
	IDConflictBackoff time.Duration
	// LookupIP resolves host names; nil uses the system resolver. Tests inject names here.
	// Every address is still checked by the SSRF guard when the connection is made.
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// Clock is the time source; nil means clock.Real{}.
	Clock clock.Clock
	// Logger receives the fetcher's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the fetcher's metrics; nil means no metrics.
	Registerer prometheus.Registerer
	// Tap, when set, receives a copy of every PDF body downloaded for a lease, written as it
	// is received by the Writes that feed its SHA-256, and finished once the body is committed
	// (see BodyTap); nil: none. The embedded `paperfetch get` sets it to write its output
	// files without reading the blobs back.
	Tap BodyTap
}

// CommitterOptions returns the options of the blobstore.Committer of c's file:// bucket: its
// gathering window is BlobSyncWindow, ended early by half the PendingCommits queued, on Clock.
func (c *Config) CommitterOptions() blobstore.CommitterOptions {
	return blobstore.CommitterOptions{Window: c.BlobSyncWindow, StartAt: max(c.PendingCommits/2, 1), Clock: c.Clock}
}

// DefaultConfig returns the default configuration (the Default… constants). Bucket must still
// be set; ID empty means a new id per process (see Config.ID).
func DefaultConfig() Config {
	return Config{
		Slots:                 DefaultSlots,
		PendingCommits:        DefaultPendingCommits,
		Prefetch:              DefaultPrefetch,
		BlobSync:              blobstore.DefaultSyncMode,
		BlobSyncWindow:        DefaultBlobSyncWindow,
		MaxFetchCalls:         DefaultMaxFetchCalls,
		SpoolMaxAge:           DefaultSpoolMaxAge,
		SpoolSweepInterval:    DefaultSpoolSweep,
		ResumeMinBytes:        DefaultResumeMinBytes,
		Contact:               DefaultContact,
		MaxSize:               DefaultMaxSize,
		Timeout:               DefaultTimeout,
		StallTimeout:          DefaultStallTimeout,
		ConnectTimeout:        DefaultConnectTimeout,
		TLSHandshakeTimeout:   DefaultTLSTimeout,
		ResponseHeaderTimeout: DefaultHeaderTimeout,
		MaxRedirects:          DefaultMaxRedirects,
		DrainGrace:            DefaultDrainGrace,
		HeartbeatInterval:     DefaultHeartbeatInterval,
		ReconnectMin:          DefaultReconnectMin,
		ReconnectMax:          DefaultReconnectMax,
		IDConflictBackoff:     DefaultIDConflictBackoff,
	}
}

// RegisterFlags registers the fetcher's flags on fs, bound to c, with c's current values as
// defaults (start from DefaultConfig). Values are checked by Validate (New calls it).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ID, "id", c.ID, "fetcher `id` on the Work stream, unique per live process (default: <hostname>-<random>, a new one per process)")
	fs.DurationVar(&c.ReconnectMax, "reconnect-max", c.ReconnectMax, "cap of the reconnect backoff; keep it below the coordinator's --reconnect-grace")
	fs.IntVar(&c.Slots, "slots", c.Slots, "number of downloads run at once")
	fs.IntVar(&c.PendingCommits, "pending-commits", c.PendingCommits, "received bodies being made durable at once, off the download slots; when all are taken, a slot whose body is in waits")
	fs.IntVar(&c.Prefetch, "prefetch", c.Prefetch, fmt.Sprintf("leases held beyond the running downloads, each taking the slot of a running download of the same host when its body is in (no round trip to the coordinator); 0 turns prefetch off, at most %d", MaxPrefetch))
	fs.IntVar(&c.MaxFetchCalls, "max-fetch-calls", c.MaxFetchCalls, "FetcherService.Fetch calls run at once (beyond: RESOURCE_EXHAUSTED)")
	fs.BoolVar(&c.AllowPrivateNetworks, "allow-private-networks", c.AllowPrivateNetworks, "allow downloads from loopback, private, link-local and metadata addresses (unsafe outside tests/local use)")
	fs.Func("allow-cidr", AllowCIDRUsage, AllowCIDRFlag(&c.AllowCIDRs))
	fs.StringVar(&c.UserAgent, "user-agent", c.UserAgent, "User-Agent header (default: paperfetch/VERSION (+https://github.com/paperfetch/paperfetch; mailto:CONTACT))")
	fs.StringVar(&c.Contact, "contact", c.Contact, "contact e-mail address put in the default User-Agent")
	fs.Int64Var(&c.MaxSize, "max-size", c.MaxSize, "default maximum PDF size in bytes")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "default overall deadline of one download")
	fs.DurationVar(&c.StallTimeout, "stall-timeout", c.StallTimeout, "abort a download when no byte arrives for this long")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", c.ConnectTimeout, "TCP connect timeout")
	fs.DurationVar(&c.TLSHandshakeTimeout, "tls-handshake-timeout", c.TLSHandshakeTimeout, "TLS handshake timeout")
	fs.DurationVar(&c.ResponseHeaderTimeout, "response-header-timeout", c.ResponseHeaderTimeout, "time allowed for response headers")
	fs.IntVar(&c.MaxRedirects, "max-redirects", c.MaxRedirects, "maximum number of redirects followed")
	fs.DurationVar(&c.DrainGrace, "drain-grace", c.DrainGrace, "on SIGTERM, how long running downloads may finish")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "heartbeat period on an idle work stream")
	fs.TextVar(&c.BlobSync, "blob-sync", c.BlobSync, "how commits into a file:// blob store are made durable: group (concurrent commits share syncfs(2) calls: about half the disk requests and CPU of per-file; syncfs also writes other processes' dirty data of that file system; bodies of 8 MiB or more are committed per file all the same) or per-file (fdatasync and a folder fsync per commit: better on a disk shared with heavy writers)")
	fs.DurationVar(&c.BlobSyncWindow, "blob-sync-window", c.BlobSyncWindow, fmt.Sprintf("with --blob-sync group, the least time between the starts of two groups of commits: commits arriving meanwhile share the next group's syncfs(2) calls (a group starts at once when half of --pending-commits wait for it; 0: as soon as the previous group ended; at most %v)", blobstore.MaxWindow))
	fs.StringVar(&c.SpoolDir, "spool-dir", c.SpoolDir, "folder for partial downloads when the blob store is not file:// (default $TMPDIR/paperfetch-spool)")
	fs.DurationVar(&c.SpoolMaxAge, "spool-max-age", c.SpoolMaxAge, "remove spool and temporary files not modified for this long (e.g. left by a killed fetcher), at start and periodically")
	fs.DurationVar(&c.SpoolSweepInterval, "spool-sweep-interval", c.SpoolSweepInterval, "how often old spool and temporary files are looked for")
	fs.Int64Var(&c.ResumeMinBytes, "resume-min-bytes", c.ResumeMinBytes, "keep a failed download's partial body for a Range resume from this size")
}

// AllowCIDRUsage is the help text of an --allow-cidr flag parsed by AllowCIDRFlag.
const AllowCIDRUsage = "address range `CIDR` reachable despite the SSRF guard (repeatable or comma-separated), e.g. 10.1.0.0/16"

// AllowCIDRFlag returns the parser of a repeatable --allow-cidr flag (for flag.FlagSet.Func):
// each value is one or more comma-separated CIDRs, appended to dst in masked form.
func AllowCIDRFlag(dst *[]netip.Prefix) func(string) error {
	return func(s string) error {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return fmt.Errorf("bad CIDR %q: %w", part, err)
			}
			*dst = append(*dst, p.Masked())
		}
		return nil
	}
}

// withDefaults returns c with the empty fields that have a meaning of their own filled: a new
// per-process ID, clock.Real{}, a discarding Logger. It replaces no value that was set.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = defaultID()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// userAgent returns the User-Agent header value.
func (c *Config) userAgent() string {
	if c.UserAgent != "" {
		return c.UserAgent
	}
	if c.Contact == "" {
		return "paperfetch/" + Version + " (+https://github.com/paperfetch/paperfetch)"
	}
	return "paperfetch/" + Version + " (+https://github.com/paperfetch/paperfetch; mailto:" + c.Contact + ")"
}

// Validate checks every value (what the flags set), returning an error that names each
// invalid field (nil when all are valid), so that a binary can check its flags before it opens
// anything. New calls it, and requires Bucket besides; nothing is clamped or replaced.
func (c *Config) Validate() error {
	return c.check(false)
}

// check is Validate, requiring Bucket too when wired is set (New).
func (c *Config) check(wired bool) error {
	var v fielderr.List
	if wired && c.Bucket == nil {
		v.Add("Config.Bucket", "", "is required")
	}
	c.validateClient(&v)
	if c.ID != "" {
		if err := validate.FetcherID("id", c.ID); err != nil {
			v.Add("Config.ID", "id", "%v", err)
		}
	}
	v.Range("Config.Slots", "slots", int64(c.Slots), 1, MaxSlots)
	v.Range("Config.PendingCommits", "pending-commits", int64(c.PendingCommits), 1, MaxSlots)
	v.Range("Config.Prefetch", "prefetch", int64(c.Prefetch), 0, MaxPrefetch)
	v.Range("Config.MaxFetchCalls", "max-fetch-calls", int64(c.MaxFetchCalls), 1, MaxFetchCallsLimit)
	if !c.BlobSync.Valid() {
		v.Add("Config.BlobSync", "blob-sync", "want per-file or group, got %v", c.BlobSync)
	}
	if c.BlobSyncWindow < 0 || c.BlobSyncWindow > blobstore.MaxWindow {
		v.Add("Config.BlobSyncWindow", "blob-sync-window", "must be from 0 to %v, got %v", blobstore.MaxWindow, c.BlobSyncWindow)
	}
	v.Positive("Config.SpoolMaxAge", "spool-max-age", c.SpoolMaxAge)
	v.Positive("Config.SpoolSweepInterval", "spool-sweep-interval", c.SpoolSweepInterval)
	v.AtLeast("Config.ResumeMinBytes", "resume-min-bytes", c.ResumeMinBytes, 0)
	v.NonNegative("Config.DrainGrace", "drain-grace", c.DrainGrace)
	v.Positive("Config.HeartbeatInterval", "heartbeat-interval", c.HeartbeatInterval)
	v.Positive("Config.ReconnectMin", "", c.ReconnectMin)
	v.Positive("Config.ReconnectMax", "reconnect-max", c.ReconnectMax)
	if c.ReconnectMax < c.ReconnectMin {
		v.Add("Config.ReconnectMax", "reconnect-max", "must be at least ReconnectMin (%v), got %v", c.ReconnectMin, c.ReconnectMax)
	}
	v.Positive("Config.IDConflictBackoff", "", c.IDConflictBackoff)
	return v.Err("invalid configuration")
}

// validateClient checks the fields of the HTTP client (what NewResolver uses too).
func (c *Config) validateClient(v *fielderr.List) {
	v.AtLeast("Config.MaxSize", "max-size", c.MaxSize, 1)
	v.Positive("Config.Timeout", "timeout", c.Timeout)
	v.Positive("Config.StallTimeout", "stall-timeout", c.StallTimeout)
	v.Positive("Config.ConnectTimeout", "connect-timeout", c.ConnectTimeout)
	v.Positive("Config.TLSHandshakeTimeout", "tls-handshake-timeout", c.TLSHandshakeTimeout)
	v.Positive("Config.ResponseHeaderTimeout", "response-header-timeout", c.ResponseHeaderTimeout)
	v.Range("Config.MaxRedirects", "max-redirects", int64(c.MaxRedirects), 0, MaxRedirectsLimit)
	if len(c.Headers) > MaxHeaders {
		v.Add("Config.Headers", "header", "at most %d extra headers, got %d", MaxHeaders, len(c.Headers))
	}
	for k, vs := range c.Headers {
		for _, val := range vs {
			if _, _, err := ParseHeader(k + ": " + val); err != nil {
				v.Add("Config.Headers", "header", "%v", err)
			}
		}
	}
	if c.Proxy != nil && c.ProxyMode == ProxyNone {
		v.Add("Config.ProxyMode", "proxy", "a proxy needs a ProxyMode")
	}
}

// Upper bounds of Config, checked by Validate.
const (
	// MaxSlots bounds Slots.
	MaxSlots = 10000
	// MaxPrefetch bounds Prefetch (the coordinator's limit on Hello.prefetch).
	MaxPrefetch = validate.MaxFetcherPrefetch
	// MaxFetchCallsLimit bounds MaxFetchCalls.
	MaxFetchCallsLimit = 1000
	// MaxRedirectsLimit bounds MaxRedirects.
	MaxRedirectsLimit = 100
)

// defaultID returns "<hostname>-<8 random hex digits>": the host (the pod name in Kubernetes)
// for people reading logs, a random part so that every process has its own id.
func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "fetcher"
	}
	host = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, host)
	var raw [4]byte
	_, _ = rand.Read(raw[:])
	return validate.Truncate(host, validate.MaxFetcherIDBytes-16) + "-" + hex.EncodeToString(raw[:])
}

// DialOptions are the options of the fetcher's connection to the coordinator: the channel's
// own reconnect backoff follows ReconnectMin/ReconnectMax (gRPC's default grows to 120s), so
// that a fetcher reconnects within ReconnectMax of the coordinator coming back.
func (c *Config) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay: c.ReconnectMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.ReconnectMax,
		},
		MinConnectTimeout: DefaultConnectTimeout,
	})}
}
