package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGetAllowCIDR: `get` refuses a loopback origin by default (the SSRF guard) and reaches
// it when --allow-cidr names its range, without lifting the guard for anything else.
func TestGetAllowCIDR(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(list, []byte(o.URL+"/files/alpha.pdf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"get", "--per-host-delay", "0s", "--retries", "0", "--quiet"}

	out := filepath.Join(dir, "refused")
	res := run(t, "", append(base, "--out", out, "--report", filepath.Join(dir, "refused.json"), list)...)
	if res.code != 1 {
		t.Fatalf("without --allow-cidr: exit %d, want 1\n%s", res.code, res.stderr)
	}
	if r := readReport(t, filepath.Join(dir, "refused.json")); len(r.Papers) != 1 || !strings.Contains(strings.ToLower(r.Papers[0].Reason), "forbidden_address") {
		t.Fatalf("without --allow-cidr: report %+v, want a forbidden_address failure", r.Papers)
	}

	out = filepath.Join(dir, "allowed")
	res = run(t, "", append(base, "--out", out, "--allow-cidr", "10.9.0.0/16", "--allow-cidr", "127.0.0.0/8", list)...)
	if res.code != 0 {
		t.Fatalf("with --allow-cidr: exit %d, want 0\n%s", res.code, res.stderr)
	}
	if res := run(t, "", append(base, "--out", filepath.Join(dir, "bad"), "--allow-cidr", "not-a-cidr", list)...); res.code != 2 || !strings.Contains(res.stderr, "not-a-cidr") {
		t.Fatalf("bad --allow-cidr: exit %d, want 2\n%s", res.code, res.stderr)
	}
}
