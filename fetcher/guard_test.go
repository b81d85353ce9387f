package fetcher

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestGuardCheck(t *testing.T) {
	g := &guard{}
	refused := []string{
		"127.0.0.1", "127.1.2.3", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254",
		"192.168.1.1", "100.64.0.1", "169.254.169.254", "169.254.1.1", "0.0.0.0", "224.0.0.1",
		"255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
		"::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1",
		"::1%lo", "fe80::1%eth0", "fd00::2%eth0", "::ffff:127.0.0.1%lo", "2606:4700::1111%eth0",
		"::7f00:1", "::a00:1", "::ffff:0:7f00:1", "64:ff9b:1::7f00:1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
	}
	for _, s := range refused {
		err := g.check(netip.MustParseAddr(s))
		var fa *forbiddenAddrError
		if !errors.As(err, &fa) {
			t.Errorf("%s allowed, want refused", s)
		}
	}
	allowed := []string{"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"}
	for _, s := range allowed {
		if err := g.check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s refused: %v", s, err)
		}
	}
	all := &guard{allowAll: true}
	for _, s := range refused {
		if err := all.check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("allow-private-networks: %s refused: %v", s, err)
		}
	}
	cidr := &guard{allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::1/128")}}
	for s, ok := range map[string]bool{"10.1.2.3": true, "::ffff:10.1.2.3": true, "::1": true, "10.2.0.1": false, "127.0.0.1": false} {
		if err := cidr.check(netip.MustParseAddr(s)); (err == nil) != ok {
			t.Errorf("allow-cidr: %s: err %v, want allowed=%v", s, err, ok)
		}
	}
}

// TestSSRFRefused downloads through the real dialer: every forbidden target fails permanently
// with FORBIDDEN_ADDRESS before any connection is made, and is allowed when configured.
func TestSSRFRefused(t *testing.T) {
	pdf := pdfBody(10_000, 5)
	origin := hostileOrigin(t, pdf)
	// The "public" origin is loopback too, so it is reached through an allowed CIDR; it
	// redirects to addresses that are not allowed.
	// The redirector listens on 127.0.0.2, the only address allowed in the redirect cases.
	redirector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	}))
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	_ = redirector.Listener.Close()
	redirector.Listener = lis
	redirector.Start()
	t.Cleanup(redirector.Close)

	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "internal.example":
			return []netip.Addr{netip.MustParseAddr("10.0.0.7")}, nil
		case "rebind.example":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "metadata.example":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		}
		return nil, errors.New("no such host")
	}
	port := netip.MustParseAddrPort(origin.Listener.Addr().String()).Port()
	rebind := "http://rebind.example:" + strconv.Itoa(int(port)) + "/pdf"
	cases := []struct {
		name string
		url  string
	}{
		{"loopback", origin.URL + "/pdf"},
		{"ipv6 loopback", "http://[::1]:" + strconv.Itoa(int(port)) + "/pdf"},
		{"10/8", "http://10.1.2.3/x.pdf"},
		{"metadata", "http://169.254.169.254/latest/meta-data/"},
		{"ipv4-mapped", "http://[::ffff:127.0.0.1]:" + strconv.Itoa(int(port)) + "/pdf"},
		{"hostname resolving to private", "http://internal.example/x.pdf"},
		{"hostname resolving to loopback", rebind},
		{"hostname resolving to metadata", "http://metadata.example/"},
		{"redirect to private", redirector.URL + "/?to=http://10.0.0.1/x.pdf"},
		{"redirect to loopback", redirector.URL + "/?to=" + origin.URL + "/pdf"},
		{"redirect to loopback name", redirector.URL + "/?to=" + rebind},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tf := newTestFetcher(t, func(c *Config) {
				c.AllowPrivateNetworks = false
				c.LookupIP = lookup
				c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
			})
			_, fail, _ := tf.run(t, tc.url, nil)
			wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_FORBIDDEN_ADDRESS)
			if strings.HasPrefix(tc.name, "redirect") && fail.url == tc.url {
				t.Fatalf("failed at the redirector (%s), want at the redirect target", fail.url)
			}
			tf.assertStore(t)
		})
	}

	t.Run("allowed with allow-private-networks", func(t *testing.T) {
		tf := newTestFetcher(t, func(c *Config) { c.AllowPrivateNetworks = true; c.LookupIP = lookup })
		for _, u := range []string{origin.URL + "/pdf", rebind, "http://[::ffff:127.0.0.1]:" + strconv.Itoa(int(port)) + "/pdf"} {
			if _, fail, _ := tf.run(t, u, nil); fail != nil {
				t.Fatalf("%s: %v", u, fail)
			}
		}
	})
	t.Run("allowed with allow-cidr", func(t *testing.T) {
		tf := newTestFetcher(t, func(c *Config) {
			c.AllowPrivateNetworks = false
			c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})
		if _, fail, _ := tf.run(t, origin.URL+"/pdf", nil); fail != nil {
			t.Fatal(fail)
		}
	})
}

// countingOrigin serves a PDF on lis and counts the requests it gets.
func countingOrigin(t *testing.T, network, addr string, pdf []byte, n *atomic.Int64) (*httptest.Server, int) {
	t.Helper()
	lis, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(pdf)
	}))
	_ = srv.Listener.Close()
	srv.Listener = lis
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, int(netip.MustParseAddrPort(lis.Addr().String()).Port())
}

// TestGuardBypassForms tries every known way of spelling a forbidden address against real
// origins on 127.0.0.1 and [::1]: directly, behind a redirect and behind a landing page's
// citation_pdf_url. Each download must fail with FORBIDDEN_ADDRESS and neither origin may see
// a request. Names are resolved by a fake resolver only (no DNS query leaves the machine).
func TestGuardBypassForms(t *testing.T) {
	pdf := pdfBody(4_000, 9)
	var hits atomic.Int64
	_, p4 := countingOrigin(t, "tcp4", "127.0.0.1:0", pdf, &hits)
	_, p6 := countingOrigin(t, "tcp6", "[::1]:0", pdf, &hits)

	// The relay is the one allowed address: it redirects to, or links to, the target.
	relay := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := r.URL.Query().Get("to")
		if r.URL.Path == "/landing" {
			w.Header().Set("Content-Type", "text/html")
			_, _ = fmt.Fprintf(w, `<html><head><meta name="citation_pdf_url" content="%s"></head></html>`, html.EscapeString(to))
			return
		}
		w.Header().Set("Location", to)
		w.WriteHeader(http.StatusFound)
	}))
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	_ = relay.Listener.Close()
	relay.Listener = lis
	relay.Start()
	t.Cleanup(relay.Close)

	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch strings.TrimSuffix(strings.ToLower(host), ".") {
		case "localhost":
			return []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, errors.New("no such host (test resolver)")
	}
	tf := newTestFetcher(t, func(c *Config) {
		c.AllowPrivateNetworks = false
		c.LookupIP = lookup
		c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})

	s4, s6 := strconv.Itoa(p4), strconv.Itoa(p6)
	forms := map[string]string{
		"zone lo":              "[::1%25lo]:" + s6,
		"zone numeric":         "[::1%251]:" + s6,
		"ipv6 loopback":        "[::1]:" + s6,
		"ipv6 loopback long":   "[0:0:0:0:0:0:0:1]:" + s6,
		"ipv4-mapped":          "[::ffff:127.0.0.1]:" + s4,
		"ipv4-mapped hex":      "[::ffff:7f00:1]:" + s4,
		"ipv4-mapped zone":     "[::ffff:127.0.0.1%25lo]:" + s4,
		"nat64":                "[64:ff9b::7f00:1]:" + s4,
		"nat64 local-use":      "[64:ff9b:1::7f00:1]:" + s4,
		"6to4":                 "[2002:7f00:1::1]:" + s4,
		"siit":                 "[::ffff:0:7f00:1]:" + s4,
		"decimal":              "2130706433:" + s4,
		"octal":                "0177.0.0.1:" + s4,
		"octal padded":         "00000177.0.0.01:" + s4,
		"hex":                  "0x7f.1:" + s4,
		"hex whole":            "0x7f000001:" + s4,
		"hex upper":            "0X7F.0X0.0X0.0X1:" + s4,
		"short":                "127.1:" + s4,
		"short three":          "127.0.1:" + s4,
		"trailing dot":         "127.0.0.1.:" + s4,
		"short trailing dot":   "127.1.:" + s4,
		"idn dots":             "127。0。0。1:" + s4,
		"idn fullwidth stop":   "127．0．0．1:" + s4,
		"idn fullwidth digits": "１２７.０.０.１:" + s4,
		"localhost":            "localhost:" + s4,
		"localhost dot":        "LOCALHOST.:" + s4,
	}
	ways := map[string]func(target string) string{
		"direct":   func(target string) string { return target },
		"redirect": func(target string) string { return relay.URL + "/redirect?to=" + url.QueryEscape(target) },
		"citation": func(target string) string { return relay.URL + "/landing?to=" + url.QueryEscape(target) },
	}
	for name, hostport := range forms {
		for way, wrap := range ways {
			t.Run(name+"/"+way, func(t *testing.T) {
				target := "http://" + hostport + "/paper.pdf"
				_, fail, _ := tf.run(t, wrap(target), nil)
				wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_FORBIDDEN_ADDRESS)
				if way != "direct" && strings.HasPrefix(fail.url, relay.URL) {
					t.Fatalf("failed at the relay (%s), want at the target", fail.url)
				}
			})
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the forbidden origins served %d requests", n)
	}
	tf.assertStore(t)

	// Zoned link-local and unique-local addresses, at the dialer's Control hook (judged before
	// any packet is sent; not dialled here so that nothing could leave the machine).
	for _, a := range []string{"[fe80::1%eth0]:80", "[fd00::2%eth0]:80", "[::1%lo]:80", "[2606:4700::1111%eth0]:443", "[fe80::1%1]:80"} {
		g := &guard{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
		err := g.control(context.Background(), "tcp6", a, nil)
		var fa *forbiddenAddrError
		if !errors.As(err, &fa) {
			t.Errorf("control(%s) = %v, want refused", a, err)
		}
	}

	// The same zoned origin is reachable when the operator allows it explicitly.
	for name, mutate := range map[string]func(*Config){
		"allow-private-networks": func(c *Config) { c.AllowPrivateNetworks = true },
		"allow-cidr": func(c *Config) {
			c.AllowPrivateNetworks = false
			c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("::1/128")}
		},
	} {
		allowed := newTestFetcher(t, mutate)
		if _, fail, _ := allowed.run(t, "http://[::1%25lo]:"+s6+"/paper.pdf", nil); fail != nil {
			t.Fatalf("%s: %v", name, fail)
		}
	}
}

func TestLiteralAddr(t *testing.T) {
	for host, want := range map[string]string{
		"2130706433": "127.0.0.1", "0177.0.0.1": "127.0.0.1", "0x7f.1": "127.0.0.1", "127.1": "127.0.0.1",
		"127.0.0.1.": "127.0.0.1", "0x": "0.0.0.0", "10.0x10.1": "10.16.0.1", "4294967295": "255.255.255.255",
		"::1%lo": "::1%lo", "1.2.3.4": "1.2.3.4", "0X7F.0X0.0X0.0X1": "127.0.0.1",
	} {
		a, ok, err := literalAddr(host)
		if err != nil || !ok || a.String() != want {
			t.Errorf("literalAddr(%q) = %v, %v, %v; want %s", host, a, ok, err, want)
		}
	}
	for _, host := range []string{"example.org", "localhost", "localhost.", "1e100.net", "xn--p1ai", "a0x1.org"} {
		if _, ok, err := literalAddr(host); ok || err != nil {
			t.Errorf("literalAddr(%q): a name, got ok=%v err=%v", host, ok, err)
		}
	}
	for _, host := range []string{"1.2.3.256", "4294967296", "08.0.0.1", "1.2.3.4.5", "example.123", "foo%lo", "1..1", "256.1"} {
		var bu *badURLError
		if _, _, err := literalAddr(host); !errors.As(err, &bu) {
			t.Errorf("literalAddr(%q): err %v, want a bad URL", host, err)
		}
	}
}
