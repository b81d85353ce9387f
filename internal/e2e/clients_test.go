package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Install commands of the example clients' dependencies; a client test skips with them when
// they are missing.
const (
	installPython = "apt-get install -y python3-grpcio python3-grpc-tools"
	installNode   = "(cd examples/node && npm ci)"
)

// testPythonClient runs examples/python/client.py against the running coordinator.
func testPythonClient(t *testing.T, c *binCluster) {
	python := findPythonWithGRPC(t)
	script := filepath.Join(c.root, "examples", "python", "client.py")
	testExampleClient(t, c, "py-client", 100, func(args ...string) string {
		return runTool(t, time.Minute, python, append([]string{script}, args...)...)
	})
}

// testNodeClient runs examples/node/client.js against the running coordinator.
func testNodeClient(t *testing.T, c *binCluster) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; install it with: apt-get install -y nodejs npm, then " + installNode)
	}
	dir := filepath.Join(c.root, "examples", "node")
	for _, dep := range []string{"@grpc/grpc-js", "@grpc/proto-loader"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", filepath.FromSlash(dep), "package.json")); err != nil {
			t.Skipf("examples/node/node_modules/%s is missing; install it with: %s", dep, installNode)
		}
	}
	testExampleClient(t, c, "node-client", 200, func(args ...string) string {
		return runToolIn(t, dir, time.Minute, node, append([]string{"client.js"}, args...)...)
	})
}

// testExampleClient runs an example client (run gets the client's arguments and returns its
// output) on three origin papers numbered from first and checks that it printed the batch
// completing and every paper with the digest the origin reports.
func testExampleClient(t *testing.T, c *binCluster, batchID string, first int, run func(args ...string) string) {
	t.Helper()
	args := []string{"--addr", c.coordAddr, "--batch-id", batchID}
	sizes := []int64{65536, 150_000, 300_000}
	var want []string
	for i, size := range sizes {
		n := first + i
		args = append(args, fmt.Sprintf("%s/pdf/%d?size=%d", c.originURL, n, size))
		want = append(want, fmt.Sprintf("paper %s-%d SUCCEEDED sha256=%s size=%d", batchID, i, c.originSHA256(t, n, size), size))
	}
	out := run(args...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], fmt.Sprintf("submitted batch %s (%d papers, created=", batchID, len(sizes))) {
		t.Errorf("first line %q, want the submitted batch", lines[0])
	}
	if !slicesContainPrefix(lines, fmt.Sprintf("batch %s COMPLETED succeeded=%d ", batchID, len(sizes))) {
		t.Errorf("output:\n%s\nwant a line saying the batch completed with %d succeeded", out, len(sizes))
	}
	for _, w := range want {
		if !slicesContainPrefix(lines, w) {
			t.Errorf("output:\n%s\nwant the line %q", out, w)
		}
	}
}

// slicesContainPrefix reports whether a line of lines starts with prefix.
func slicesContainPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// findPythonWithGRPC returns a python3 that can import grpc and grpc_tools (/usr/bin/python3
// first: Debian's python3-grpcio and python3-grpc-tools install there), or skips the test.
func findPythonWithGRPC(t *testing.T) string {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		if exec.Command(p, "-c", "import grpc, grpc_tools.protoc").Run() == nil {
			return p
		}
	}
	t.Skipf("no python3 with grpcio and grpcio-tools (tried %s); install them with: %s", strings.Join(candidates, ", "), installPython)
	return ""
}
