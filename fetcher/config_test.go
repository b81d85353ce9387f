package fetcher

import (
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
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
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := fs.Parse([]string{"--slots", "3", "--allow-cidr", "10.1.0.0/16,192.168.5.0/24", "--allow-cidr", "fd00::/8",
		"--contact", "ops@example.org", "--max-size", "1000", "--stall-timeout", "5s", "--drain-grace", "7s"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.5.0/24"), netip.MustParsePrefix("fd00::/8")}
	if len(c.AllowCIDRs) != 3 || c.AllowCIDRs[0] != want[0] || c.AllowCIDRs[2] != want[2] {
		t.Fatalf("cidrs %v", c.AllowCIDRs)
	}
	if c.Slots != 3 || c.MaxSize != 1000 || c.StallTimeout != 5*time.Second || c.DrainGrace != 7*time.Second {
		t.Fatalf("config %+v", c)
	}
	if ua := c.userAgent(); !strings.Contains(ua, "mailto:ops@example.org") || !strings.HasPrefix(ua, "paperfetch/") {
		t.Fatalf("user agent %q", ua)
	}
	if err := fs.Parse([]string{"--allow-cidr", "nonsense"}); err == nil {
		t.Fatal("bad CIDR accepted")
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
	if _, err := New(Config{Bucket: bucket, BlobURL: url}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("old temp file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("recent temp file removed: %v", err)
	}
}
