package main_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// nxdomainServer answers every DNS query on a UDP loopback address with NXDOMAIN ("no such
// name") and counts the queries. It returns the address it listens on.
func nxdomainServer(t *testing.T, addr string) (*atomic.Int64, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	var queries atomic.Int64
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if n < 12 {
				continue
			}
			// The question ends after its name's labels and 4 bytes of type and class.
			end := 12
			for end < n && q[end] != 0 {
				end += int(q[end]) + 1
			}
			end += 5
			if end > n {
				continue
			}
			queries.Add(1)
			resp := append([]byte{q[0], q[1], 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0}, q[12:end]...) // QR, RD, RA, RCODE 3
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return &queries, nil
}

// A host name that does not exist fails after one quick retry as no_such_host, instead of being
// retried for minutes like an overloaded host. The binary runs in a mount namespace of its own
// whose /etc/resolv.conf names a local DNS server that answers NXDOMAIN (root only): no query
// leaves the machine.
func TestGetNoSuchHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare is not installed")
	}
	// A container may forbid mount namespaces even to root: then the test cannot isolate the
	// resolver, and it must not run against the machine's own DNS.
	if out, err := exec.Command("unshare", "-m", "sh", "-c", "mount --bind /etc/resolv.conf /etc/resolv.conf").CombinedOutput(); err != nil {
		t.Skipf("no mount namespace here: %v %s", err, out)
	}
	queries, err := nxdomainServer(t, "127.77.0.53:53")
	if err != nil {
		t.Skipf("cannot serve DNS on 127.77.0.53:53: %v", err)
	}
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.77.0.53\noptions timeout:2 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := filepath.Join(dir, "r.json")
	args := []string{"get", "--out", filepath.Join(dir, "out"), "--per-host-delay", "0s", "--retries", "6", "--report", rep,
		"http://no-such-paper-host.invalid/x.pdf"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"-m", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv, bin}, args...)...)
	cmd.Env = append(os.Environ(), "PAPERFETCH_COORDINATOR=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "reason=no_such_host attempts=2 ") {
		t.Errorf("want a no_such_host failure after 2 attempts:\n%s", stderr.String())
	}
	r := readReport(t, rep)
	if len(r.Papers) != 1 || r.Papers[0].Reason != "no_such_host" || r.Papers[0].Attempts != 2 {
		t.Errorf("report %+v", r.Papers)
	}
	if queries.Load() == 0 {
		t.Error("the local DNS server was never asked")
	}
	t.Logf("no_such_host after %v, %d DNS queries", elapsed.Round(time.Millisecond), queries.Load())
}
