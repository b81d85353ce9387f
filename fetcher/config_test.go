package fetcher

import (
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

func TestRegisterFlags(t *testing.T) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := fs.Parse([]string{"--slots", "3", "--allow-cidr", "10.1.0.0/16,192.168.5.0/24", "--allow-cidr", "fd00::/8",
		"--contact", "ops@example.org", "--max-size", "1000", "--stall-timeout", "5s", "--drain-grace", "7s", "--blob-sync", "per-file", "--blob-sync-window", "3ms"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.5.0/24"), netip.MustParsePrefix("fd00::/8")}
	if len(c.AllowCIDRs) != 3 || c.AllowCIDRs[0] != want[0] || c.AllowCIDRs[2] != want[2] {
		t.Fatalf("cidrs %v", c.AllowCIDRs)
	}
	if c.Slots != 3 || c.MaxSize != 1000 || c.StallTimeout != 5*time.Second || c.DrainGrace != 7*time.Second || c.BlobSync != blobstore.SyncPerFile || c.BlobSyncWindow != 3*time.Millisecond {
		t.Fatalf("config %+v", c)
	}
	if ua := c.userAgent(); !strings.Contains(ua, "mailto:ops@example.org") || !strings.HasPrefix(ua, "paperfetch/") {
		t.Fatalf("user agent %q", ua)
	}
	if err := fs.Parse([]string{"--allow-cidr", "nonsense"}); err == nil {
		t.Fatal("bad CIDR accepted")
	}
	if err := fs.Parse([]string{"--blob-sync", "fsync"}); err == nil {
		t.Fatal("unknown --blob-sync accepted")
	}
	if d := DefaultConfig(); d.BlobSync != blobstore.DefaultSyncMode {
		t.Fatalf("default --blob-sync %v, want %v", d.BlobSync, blobstore.DefaultSyncMode)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without bucket succeeded")
	}
}

func TestUserAgentHeaderTimeoutAndMetrics(t *testing.T) {
	var gotUA string
	pdf := pdfBody(10_000, 41)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow-headers" {
			<-r.Context().Done()
			return
		}
		gotUA = r.Header.Get("User-Agent")
		_, _ = w.Write(pdf)
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	tf := newTestFetcher(t, func(c *Config) {
		c.Contact = "ops@example.org"
		c.Registerer = reg
	})
	if _, fail, _ := tf.run(t, srv.URL+"/x.pdf", nil); fail != nil {
		t.Fatal(fail)
	}
	if !strings.Contains(gotUA, "mailto:ops@example.org") {
		t.Fatalf("User-Agent %q", gotUA)
	}
	slow := newTestFetcher(t, func(c *Config) { c.ResponseHeaderTimeout = 100 * time.Millisecond })
	_, fail, _ := slow.run(t, srv.URL+"/slow-headers", nil)
	wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT)

	// Metrics are registered; byte counts flow through the download path.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"paperfetch_fetcher_active_downloads", "paperfetch_fetcher_downloaded_bytes_total"} {
		if !names[n] {
			t.Errorf("metric %s missing (have %v)", n, names)
		}
	}
}

func TestNewCleansOldSpoolFiles(t *testing.T) {
	dir := t.TempDir()
	tmp := blobstore.TempDir(dir)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(tmp, "killed.tmp"+blobstore.TempSuffix)
	fresh := filepath.Join(tmp, "running.part"+blobstore.TempSuffix)
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("%PDF-partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	url := "file://" + dir
	bucket, err := blobstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bucket.Close() }()
	cfg := DefaultConfig()
	cfg.Bucket, cfg.BlobURL = bucket, url
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("old temp file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("recent temp file removed: %v", err)
	}
}

// TestValidate: every invalid value is rejected by New with an error naming the field (and its
// flag), before Run could panic on it (a negative HeartbeatInterval in NewTicker, a negative
// ReconnectMin in rand.N); zero means zero where zero is a value.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	bucket, err := blobstore.Open(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bucket.Close() }()
	valid := func() Config {
		c := DefaultConfig()
		c.Bucket, c.BlobURL = bucket, "file://"+dir
		return c
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Config.Bucket") || !strings.Contains(err.Error(), "Config.Slots") {
		t.Fatalf("the zero Config: %v", err)
	}
	if d := DefaultConfig(); d.Validate() != nil { // the values only: no Bucket needed
		t.Fatalf("DefaultConfig: %v", d.Validate())
	}
	proxy, _ := url.Parse("http://127.0.0.1:3128")
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"Config.Bucket", func(c *Config) { c.Bucket = nil }},
		{"Config.ID (--id)", func(c *Config) { c.ID = "has space" }},
		{"Config.ID (--id)", func(c *Config) { c.ID = strings.Repeat("x", 129) }},
		{"Config.Slots (--slots)", func(c *Config) { c.Slots = 0 }},
		{"Config.Slots (--slots)", func(c *Config) { c.Slots = MaxSlots + 1 }},
		{"Config.MaxFetchCalls (--max-fetch-calls)", func(c *Config) { c.MaxFetchCalls = 0 }},
		{"Config.BlobSync (--blob-sync)", func(c *Config) { c.BlobSync = 0 }},
		{"Config.BlobSyncWindow (--blob-sync-window)", func(c *Config) { c.BlobSyncWindow = -time.Millisecond }},
		{"Config.BlobSyncWindow (--blob-sync-window)", func(c *Config) { c.BlobSyncWindow = blobstore.MaxWindow + 1 }},
		{"Config.SpoolMaxAge (--spool-max-age)", func(c *Config) { c.SpoolMaxAge = -time.Hour }},
		{"Config.SpoolSweepInterval (--spool-sweep-interval)", func(c *Config) { c.SpoolSweepInterval = 0 }},
		{"Config.ResumeMinBytes (--resume-min-bytes)", func(c *Config) { c.ResumeMinBytes = -1 }},
		{"Config.MaxSize (--max-size)", func(c *Config) { c.MaxSize = 0 }},
		{"Config.Timeout (--timeout)", func(c *Config) { c.Timeout = -time.Second }},
		{"Config.StallTimeout (--stall-timeout)", func(c *Config) { c.StallTimeout = 0 }},
		{"Config.ConnectTimeout (--connect-timeout)", func(c *Config) { c.ConnectTimeout = -1 }},
		{"Config.TLSHandshakeTimeout (--tls-handshake-timeout)", func(c *Config) { c.TLSHandshakeTimeout = 0 }},
		{"Config.ResponseHeaderTimeout (--response-header-timeout)", func(c *Config) { c.ResponseHeaderTimeout = -time.Second }},
		{"Config.MaxRedirects (--max-redirects)", func(c *Config) { c.MaxRedirects = -1 }},
		{"Config.MaxRedirects (--max-redirects)", func(c *Config) { c.MaxRedirects = MaxRedirectsLimit + 1 }},
		{"Config.DrainGrace (--drain-grace)", func(c *Config) { c.DrainGrace = -time.Second }},
		{"Config.HeartbeatInterval (--heartbeat-interval)", func(c *Config) { c.HeartbeatInterval = -time.Second }},
		{"Config.HeartbeatInterval (--heartbeat-interval)", func(c *Config) { c.HeartbeatInterval = 0 }},
		{"Config.ReconnectMin", func(c *Config) { c.ReconnectMin = -time.Second }},
		{"Config.ReconnectMax (--reconnect-max)", func(c *Config) { c.ReconnectMax = c.ReconnectMin / 2 }},
		{"Config.IDConflictBackoff", func(c *Config) { c.IDConflictBackoff = 0 }},
		{"Config.Headers (--header)", func(c *Config) { c.Headers = http.Header{"Bad Name": {"x"}} }},
		{"Config.ProxyMode (--proxy)", func(c *Config) { c.Proxy = proxy }},
	} {
		c := valid()
		tc.mutate(&c)
		_, err := New(c)
		if err == nil || !strings.Contains(err.Error(), tc.field+" ") {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
	// NewResolver checks the HTTP client's fields.
	c := valid()
	c.Timeout = 0
	if _, err := NewResolver(c); err == nil || !strings.Contains(err.Error(), "Config.Timeout") {
		t.Errorf("NewResolver: %v", err)
	}
	// Zero is zero: no redirects, no drain grace, every partial kept.
	c = valid()
	c.MaxRedirects, c.DrainGrace, c.ResumeMinBytes, c.Contact = 0, 0, 0, ""
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.MaxRedirects != 0 || f.cfg.DrainGrace != 0 || f.cfg.ResumeMinBytes != 0 || strings.Contains(f.cfg.userAgent(), "mailto") {
		t.Fatalf("zero values replaced: %+v %q", f.cfg, f.cfg.userAgent())
	}
}
