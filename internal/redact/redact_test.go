package redact

import (
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
