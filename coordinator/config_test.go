package coordinator

import (
	"flag"
	"strings"
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
