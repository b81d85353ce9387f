package coordinator

import (
	"flag"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestRegisterFlags(t *testing.T) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if !reflect.DeepEqual(c, DefaultConfig()) {
		t.Fatalf("registering flags changed the configuration: %+v", c)
	}
	if f := fs.Lookup("per-host-delay"); f.DefValue != "1s" {
		t.Fatalf("--per-host-delay default %q", f.DefValue)
	}
	if f := fs.Lookup("commit-window"); f.DefValue != "10ms" {
		t.Fatalf("--commit-window default %q", f.DefValue)
	}
	err := fs.Parse([]string{"--per-host-delay=0", "--commit-window=0", "--per-host-concurrency=3", "--host-limit=arxiv.org=3s/1",
		"--host-limit=[::1]:8080=/4", "--host-limit=slow.example=0s", "--download-max-size=1000", "--download-timeout=1m"})
	if err != nil {
		t.Fatal(err)
	}
	c.DataDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.PerHostDelay != 0 || c.CommitWindow != 0 || c.PerHostConcurrency != 3 || c.Limits.GetMaxSizeBytes() != 1000 || c.Limits.GetTimeout().AsDuration() != time.Minute {
		t.Fatalf("parsed: %+v", c)
	}
	c.PerHostDelay = 2 * time.Second
	c = c.withDefaults()
	for host, want := range map[string]struct {
		d time.Duration
		n int
	}{
		"arxiv.org:443": {3 * time.Second, 1},
		"[::1]:8080":    {2 * time.Second, 4}, // the delay is not overridden
		"slow.example":  {0, 3},               // an explicit 0s: no delay, not the default
		"example.com":   {2 * time.Second, 3},
	} {
		if d, n := c.hostLimits(host); d != want.d || n != want.n {
			t.Errorf("%s: %v/%d, want %v/%d", host, d, n, want.d, want.n)
		}
	}
	for _, bad := range []string{"--host-limit=nohost", "--host-limit=a.example=-1s", "--host-limit=a.example=/0", "--download-timeout=soon"} {
		if err := fs.Parse([]string{bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestValidate: every invalid value is rejected by Open with an error naming the field (and
// its flag), nothing is clamped, and zero means zero where zero is a value.
func TestValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.DataDir = t.TempDir()
		return c
	}
	if err := (&Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "Config.DataDir") || !strings.Contains(err.Error(), "Config.MaxAttempts") {
		t.Fatalf("the zero Config: %v", err)
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"Config.DataDir", func(c *Config) { c.DataDir = "" }},
		{"Config.StreamRate", func(c *Config) { c.StreamRate = 0 }},
		{"Config.StreamRate", func(c *Config) { c.StreamRate = math.Inf(1) }},
		{"Config.StreamRatePerSlot", func(c *Config) { c.StreamRatePerSlot = -1 }},
		{"Config.StreamRatePerSlot", func(c *Config) { c.StreamRatePerSlot = math.NaN() }},
		{"Config.Verifiers", func(c *Config) { c.Verifiers = 0 }},
		{"Config.Verifiers", func(c *Config) { c.Verifiers = MaxVerifiers + 1 }},
		{"Config.PerHostDelay (--per-host-delay)", func(c *Config) { c.PerHostDelay = -time.Second }},
		{"Config.PerHostConcurrency (--per-host-concurrency)", func(c *Config) { c.PerHostConcurrency = 0 }},
		{"Config.PerHostConcurrency (--per-host-concurrency)", func(c *Config) { c.PerHostConcurrency = MaxPerHostConcurrency + 1 }},
		{`Config.HostOverrides["a.example"].Delay (--host-limit)`, func(c *Config) {
			c.HostOverrides = map[string]HostLimits{"a.example": {Delay: new(-time.Second)}}
		}},
		{`Config.HostOverrides["a.example"].Concurrency (--host-limit)`, func(c *Config) {
			c.HostOverrides = map[string]HostLimits{"a.example": {Concurrency: new(0)}}
		}},
		{`Config.HostOverrides["A.example"] (--host-limit)`, func(c *Config) { c.HostOverrides = map[string]HostLimits{"A.example": {}} }},
		{"Config.Resolve", func(c *Config) { c.Resolve.DOIBase = "ftp://doi.example" }},
		{"Config.MaxAttempts (--max-attempts)", func(c *Config) { c.MaxAttempts = 0 }},
		{"Config.MaxAttempts (--max-attempts)", func(c *Config) { c.MaxAttempts = MaxMaxAttempts + 1 }},
		{"Config.LeaseTTL (--lease-ttl)", func(c *Config) { c.LeaseTTL = 0 }},
		{"Config.StartTimeout (--lease-start-timeout)", func(c *Config) { c.StartTimeout = -time.Second }},
		{"Config.DeadlineGrace (--lease-deadline-grace)", func(c *Config) { c.DeadlineGrace = -time.Second }},
		{"Config.FetcherSilence", func(c *Config) { c.FetcherSilence = 0 }},
		{"Config.ReconnectGrace (--reconnect-grace)", func(c *Config) { c.ReconnectGrace = -time.Millisecond }},
		{"Config.MaxBatchPapers (--max-batch-papers)", func(c *Config) { c.MaxBatchPapers = 0 }},
		{"Config.Limits.MaxSizeBytes (--download-max-size)", func(c *Config) { c.Limits = &pb.DownloadLimits{MaxSizeBytes: -1} }},
		{"Config.Limits.Timeout (--download-timeout)", func(c *Config) { c.Limits = &pb.DownloadLimits{Timeout: durationpb.New(-time.Second)} }},
		{"Config.Limits.StallTimeout (--download-stall-timeout)", func(c *Config) { c.Limits = &pb.DownloadLimits{StallTimeout: durationpb.New(0)} }},
		{"Config.RetryBaseDelay (--retry-base-delay)", func(c *Config) { c.RetryBaseDelay = -time.Second }},
		{"Config.RetryMaxDelay (--retry-max-delay)", func(c *Config) { c.RetryMaxDelay = time.Second }},
		{"Config.MaxRetryAfter (--max-retry-after)", func(c *Config) { c.MaxRetryAfter = -time.Second }},
		{"Config.BreakerThreshold (--breaker-threshold)", func(c *Config) { c.BreakerThreshold = 0 }},
		{"Config.BreakerCooldown (--breaker-cooldown)", func(c *Config) { c.BreakerCooldown = 0 }},
		{"Config.BreakerMaxCooldown (--breaker-max-cooldown)", func(c *Config) { c.BreakerMaxCooldown = time.Second }},
		{"Config.BreakerGiveUp (--breaker-give-up)", func(c *Config) { c.BreakerGiveUp = -1 }},
		{"Config.InboxSize", func(c *Config) { c.InboxSize = 0 }},
		{"Config.InboxSize", func(c *Config) { c.InboxSize = MaxQueueSize + 1 }},
		{"Config.StreamBuffer", func(c *Config) { c.StreamBuffer = -1 }},
		{"Config.Retention (--retention)", func(c *Config) { c.Retention = -time.Hour }},
		{"Config.WatchersPerBatch", func(c *Config) { c.WatchersPerBatch = 0 }},
		{"Config.WatchersPerPeer", func(c *Config) { c.WatchersPerPeer = MaxWatchers + 1 }},
		{"Config.WatchInterval", func(c *Config) { c.WatchInterval = 0 }},
		{"Config.LockTimeout", func(c *Config) { c.LockTimeout = -time.Second }},
		{"Config.CommitWindow (--commit-window)", func(c *Config) { c.CommitWindow = -time.Millisecond }},
		{"Config.CommitWindow (--commit-window)", func(c *Config) { c.CommitWindow = MaxCommitWindow + 1 }},
	} {
		c := valid()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field+" ") {
			t.Errorf("%s: %v", tc.field, err)
			continue
		}
		if _, oerr := Open(c); oerr == nil || oerr.Error() != "coordinator: "+err.Error() {
			t.Errorf("%s: Open: %v", tc.field, oerr)
		}
	}

	// Zero means zero: no delay, no reconnect grace, keep forever; nothing is replaced.
	c := valid()
	c.PerHostDelay, c.ReconnectGrace, c.Retention, c.DeadlineGrace, c.CommitWindow = 0, 0, 0, 0, 0
	c.HostOverrides = map[string]HostLimits{"a.example": {Delay: new(time.Duration(0))}}
	co, err := Open(c)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = co.Close() }()
	if co.cfg.PerHostDelay != 0 || co.cfg.ReconnectGrace != 0 || co.cfg.Retention != 0 || co.cfg.DeadlineGrace != 0 || co.loop.window != 0 ||
		co.eng.graceUntil.After(time.Now()) {
		t.Fatalf("zero values replaced: %+v", co.cfg)
	}
	if d, n := co.cfg.hostLimits("a.example"); d != 0 || n != DefaultPerHostConcurrency {
		t.Fatalf("a.example: %v/%d", d, n)
	}
}

func TestLeaseIDs(t *testing.T) {
	ids := leaseIDs{storeID: "abc123", key: []byte("0123456789abcdef0123456789abcdef")}
	id := ids.issue(123456, 7, "fetcher-a")
	idx, attempt, ok := ids.check(id, "fetcher-a")
	if !ok || idx != 123456 || attempt != 7 {
		t.Fatalf("%s -> %d %d %v", id, idx, attempt, ok)
	}
	if _, _, ok := ids.check(id, "fetcher-b"); ok {
		t.Error("an id verified for another fetcher")
	}
	other := leaseIDs{storeID: "abc123", key: []byte("another key, another coordinator")}
	if _, _, ok := other.check(id, "fetcher-a"); ok {
		t.Error("an id verified under another key")
	}
	// The HMAC is reused: issuing and checking other ids in between changes nothing.
	if _, _, ok := ids.check(ids.issue(9, 1, "fetcher-b"), "fetcher-b"); !ok {
		t.Error("a second id did not verify")
	}
	if again := ids.issue(123456, 7, "fetcher-a"); again != id {
		t.Errorf("the same lease got id %q, then %q", id, again)
	}
	if n := testing.AllocsPerRun(100, func() { ids.check(id, "fetcher-a") }); n != 0 {
		t.Errorf("check allocates %v times, want 0", n)
	}
	guessed := id[:len(id)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", id[len(id)-1])+1)%16])
	for _, bad := range []string{"", "abc123", "other-1-1", "abc123-1", "abc123-zz!-1", "abc123-1-x", "abc1234-1-1",
		"abc123-2n9c-7", "abc123-2n9c-7-", guessed, strings.Replace(id, "-7-", "-8-", 1)} {
		if _, _, ok := ids.check(bad, "fetcher-a"); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := storedPaper{state: stateSucceeded, flags: flagCached, urlIdx: 1, nurls: 2, reason: 3, attempts: 4, failures: 5,
		dead: 6, batch: 7, host: 8, idHash: 9, at: 10, createdAt: 11, size: 12, urlHash: 13, finalHash: 14,
		lastError: "e", sha256: "s", blobKey: "k", finalURL: "u", contentType: "c"}
	var got storedPaper
	if err := got.unmarshalFixed(r.marshalFixed(nil)); err != nil {
		t.Fatal(err)
	}
	if err := got.unmarshalResults(r.marshalResults(nil)); err != nil || got != r {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if err := got.unmarshalResults(r.marshalResults(nil)[:4]); err == nil {
		t.Fatal("truncated record accepted")
	}
	if err := got.unmarshalFixed(r.marshalFixed(nil)[:recordFixed-1]); err == nil {
		t.Fatal("truncated fixed record accepted")
	}
}
