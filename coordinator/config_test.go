package coordinator

import (
	"flag"
	"testing"
	"time"
)

func TestRegisterFlags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if c.PerHostDelay != time.Second || c.PerHostConcurrency != 2 || c.MaxAttempts != 5 {
		t.Fatalf("defaults: %+v", c)
	}
	err := fs.Parse([]string{"--per-host-delay=0", "--per-host-concurrency=3", "--host-limit=arxiv.org=3s/1",
		"--host-limit=[::1]:8080=/4", "--download-max-size=1000", "--download-timeout=1m"})
	if err != nil {
		t.Fatal(err)
	}
	if c.PerHostDelay >= 0 || c.PerHostConcurrency != 3 || c.Limits.GetMaxSizeBytes() != 1000 || c.Limits.GetTimeout().AsDuration() != time.Minute {
		t.Fatalf("parsed: %+v", c)
	}
	c = c.withDefaults()
	if d, n := c.hostLimits("arxiv.org:443"); d != 3*time.Second || n != 1 {
		t.Fatalf("arxiv.org:443: %v %d", d, n)
	}
	if d, n := c.hostLimits("[::1]:8080"); d != 0 || n != 4 {
		t.Fatalf("[::1]:8080: %v %d", d, n)
	}
	if d, n := c.hostLimits("example.com"); d != 0 || n != 3 {
		t.Fatalf("example.com: %v %d", d, n)
	}
	if err := fs.Parse([]string{"--host-limit=nohost"}); err == nil {
		t.Fatal("bad --host-limit accepted")
	}
}

func TestLeaseIDRoundTrip(t *testing.T) {
	id := leaseID("abc123", 123456, 7)
	idx, attempt, ok := parseLeaseID("abc123", id)
	if !ok || idx != 123456 || attempt != 7 {
		t.Fatalf("%s -> %d %d %v", id, idx, attempt, ok)
	}
	for _, bad := range []string{"", "abc123", "other-1-1", "abc123-1", "abc123-zz!-1", "abc123-1-x", "abc1234-1-1"} {
		if _, _, ok := parseLeaseID("abc123", bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := paperRecord{state: stateSucceeded, flags: flagCached, urlIdx: 1, nurls: 2, reason: 3, attempts: 4, failures: 5,
		dead: 6, batch: 7, host: 8, idHash: 9, aux: 10, createdAt: 11, size: 12, urlHash: 13, finalHash: 14,
		lastError: "e", sha256: "s", blobKey: "k", finalURL: "u", contentType: "c"}
	var got paperRecord
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
