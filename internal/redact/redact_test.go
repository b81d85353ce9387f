package redact

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://b.s3.amazonaws.com/p.pdf?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123&id=7": "https://b.s3.amazonaws.com/p.pdf?X-Amz-Algorithm=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&id=7",
		"https://user:pw@h.example/x.pdf?token=t0p&page=2#frag":                                                       "https://h.example/x.pdf?token=REDACTED&page=2",
		"https://h.example/x.pdf?sig=s&key=k&api_key=a&access_token=z&Client_Secret=c":                                "https://h.example/x.pdf?sig=REDACTED&key=REDACTED&api_key=REDACTED&access_token=REDACTED&Client_Secret=REDACTED",
		"https://arxiv.org/pdf/2301.00001?download=1":                                                                 "https://arxiv.org/pdf/2301.00001?download=1",
		"https://h.example/plain.pdf":                                                                                 "https://h.example/plain.pdf",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}

func TestText(t *testing.T) {
	msg := `https://h.example/p.pdf?X-Amz-Signature=deadbeef: Get "https://h.example/p.pdf?X-Amz-Signature=deadbeef&token=s3cr3t": dial tcp: connection refused`
	got := Text(msg)
	if strings.Contains(got, "deadbeef") || strings.Contains(got, "s3cr3t") || !strings.Contains(got, "connection refused") || !strings.Contains(got, "https://h.example/p.pdf?X-Amz-Signature=REDACTED") {
		t.Fatalf("Text = %q", got)
	}
	if Text("no url here") != "no url here" {
		t.Fatal("changed a text without URLs")
	}
}

// TestURLPlainUnchanged: the URLs URL returns without parsing them (plain) are the ones parsing,
// redacting and printing gives back unchanged: random http(s) URLs of the plain alphabet with
// and without a query, and its edges (empty host, ports valid or not, dot segments, colons in
// the path, empty queries and parameters); URLs with something to redact or escape are not
// plain.
func TestURLPlainUnchanged(t *testing.T) {
	const alphabet = "abzAZ09-._~/:"
	const query = "abzAZ09-._~=&"
	rng := rand.New(rand.NewPCG(1, 2))
	urls := []string{"https://x:1/", "https://x/..//./", "https://x/a:b/c~d", "https://x", "http://7",
		"http://127.0.0.1:8080/pdf/7", "https://arxiv.org/pdf/2301.00001v2", "https://X.EXAMPLE/A_B-C.pdf", "https://x:99999/",
		"http://127.0.0.1:43845/pdf/12?size=20480", "https://x/?", "https://x?a", "https://x/p?a=&=b&&c=d", "https://x/p?keyword=1&tokens"}
	for range 20000 {
		var b strings.Builder
		b.WriteString([]string{"http://", "https://"}[rng.IntN(2)])
		for range 1 + rng.IntN(8) {
			b.WriteByte("ab.-Z9"[rng.IntN(6)])
		}
		if rng.IntN(4) == 0 {
			b.WriteString(":8080")
		}
		if rng.IntN(2) == 0 {
			b.WriteByte('/')
		}
		for range rng.IntN(24) {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		if rng.IntN(2) == 0 {
			b.WriteByte('?')
			for range rng.IntN(16) {
				b.WriteByte(query[rng.IntN(len(query))])
			}
		}
		urls = append(urls, b.String())
	}
	checked := 0
	for _, u := range urls {
		if !plain(u) {
			continue
		}
		checked++
		if got := parsed(u); got != u {
			t.Errorf("%q: parsed and printed it is %q", u, got)
		}
	}
	if checked < 12000 {
		t.Fatalf("only %d plain URLs checked", checked)
	}
	for _, u := range []string{"http://", "https://", "https://:", "https:///p", "https://?", "https://x:/", "http://a:b:c/", "https://x_y/", "HTTPS://x/", "https://x/a b", "https://x/%41", "https://u@x/",
		"https://x/?token=1", "https://x/?a=1&X-Amz-Signature=2", "https://x/?a=%41", "https://x/?a=1?b", "https://x/?a+b=1",
		"https://x/#f", "https://[::1]/", "ftp://x/"} {
		if plain(u) {
			t.Errorf("%q: plain", u)
		}
	}
}

// BenchmarkURL redacts the final URL of a download, as the coordinator does for every
// completion: one without a query, and one of bench/origin's.
func BenchmarkURL(b *testing.B) {
	for _, u := range []string{"https://arxiv.org/pdf/2301.00001v2", "http://127.0.0.1:43845/pdf/12?size=20480"} {
		b.Run(strings.SplitN(u, "/", 4)[2], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if URL(u) != u {
					b.Fatal(u)
				}
			}
		})
	}
}

// FuzzURLPlain: a string URL returns without parsing it (plain) is one that parsing, redacting
// and printing gives back unchanged, whatever its bytes.
func FuzzURLPlain(f *testing.F) {
	for _, s := range []string{"https://arxiv.org/pdf/2301.00001v2", "http://127.0.0.1:43845/pdf/12?size=20480",
		"https://x/p?a=&=b&&c=d", "https://x/?TOKEN=1", "https://u:p@x/", "https://x:1:2/", "https://x/?a=1#f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if plain(s) {
			if got := parsed(s); got != s {
				t.Fatalf("%q is plain, but parsed and redacted it is %q", s, got)
			}
		}
	})
}
