package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/paperfetch/paperfetch/internal/tlsreload/tlstest"
)

// Pinned install commands of the command-line tools the README shows; a test that needs a
// missing tool skips with the command.
const (
	installGrpcurl     = "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
	installHealthProbe = "go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.63"
)

// TestBinaries runs the real coordinator, fetcher and origin binaries as processes on 127.0.0.1
// and drives them with the real tools exactly as README.md ("Running the two services") does:
// grpc-health-probe, grpcurl (list, describe, SubmitBatch, WatchBatch, GetBatch, GetPaper,
// ListPapers, FetcherService/Fetch), and the Python and Node example clients.
func TestBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries; skipped under -short")
	}
	c := startBinCluster(t)

	t.Run("grpc-health-probe", func(t *testing.T) {
		probe := findTool(t, "grpc-health-probe", installHealthProbe)
		for _, addr := range []string{c.coordAddr, c.fetcherAddr} {
			out := runTool(t, 30*time.Second, probe, "-addr", addr)
			if strings.TrimSpace(out) != "status: SERVING" {
				t.Errorf("grpc-health-probe -addr %s: %q, want \"status: SERVING\"", addr, out)
			}
		}
	})

	t.Run("grpcurl list and describe", func(t *testing.T) {
		grpcurl := findTool(t, "grpcurl", installGrpcurl)
		wantServices := map[string][]string{
			c.coordAddr:   {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "paperfetch.v1.CoordinatorService", "paperfetch.v1.FetcherGatewayService"},
			c.fetcherAddr: {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "paperfetch.v1.FetcherService"},
		}
		for addr, want := range wantServices {
			got := strings.Fields(runTool(t, 30*time.Second, grpcurl, "-plaintext", addr, "list"))
			for _, s := range want {
				if !slices.Contains(got, s) {
					t.Errorf("grpcurl -plaintext %s list = %q, missing %s", addr, got, s)
				}
			}
		}
		out := runTool(t, 30*time.Second, grpcurl, "-plaintext", c.coordAddr, "describe", "paperfetch.v1.CoordinatorService.SubmitBatch")
		want := "rpc SubmitBatch ( .paperfetch.v1.SubmitBatchRequest ) returns ( .paperfetch.v1.SubmitBatchResponse );"
		if !strings.Contains(out, "paperfetch.v1.CoordinatorService.SubmitBatch is a method:") || !strings.Contains(out, want) {
			t.Errorf("describe SubmitBatch:\n%s\nwant it to contain %q", out, want)
		}
	})

	t.Run("grpcurl batch", func(t *testing.T) {
		grpcurl := findTool(t, "grpcurl", installGrpcurl)
		testGrpcurlBatch(t, c, grpcurl)
	})

	t.Run("grpcurl FetcherService/Fetch", func(t *testing.T) {
		grpcurl := findTool(t, "grpcurl", installGrpcurl)
		const n, size = 7, 100_000
		want := c.originSHA256(t, n, size)
		req := fmt.Sprintf(`{"url": "%s/pdf/%d?size=%d"}`, c.originURL, n, size)
		out := runTool(t, 30*time.Second, grpcurl, "-plaintext", "-d", req, c.fetcherAddr, "paperfetch.v1.FetcherService/Fetch")
		var events []struct {
			Event struct {
				Started   *struct{ URL string } `json:"started"`
				Completed *struct {
					SHA256 string `json:"sha256"`
					Size   string `json:"size"`
				} `json:"completed"`
				Failed json.RawMessage `json:"failed"`
			} `json:"event"`
		}
		decodeStream(t, out, &events)
		if len(events) < 2 || events[0].Event.Started == nil {
			t.Fatalf("Fetch events:\n%s\nwant started first", out)
		}
		last := events[len(events)-1].Event
		if last.Completed == nil || last.Completed.SHA256 != want || last.Completed.Size != fmt.Sprint(size) {
			t.Fatalf("Fetch events:\n%s\nwant a final completed event with sha256 %s and size %d", out, want, size)
		}
	})

	t.Run("curl /v1 and RetryFailed", func(t *testing.T) {
		grpcurl := findTool(t, "grpcurl", installGrpcurl)
		testHTTPAPI(t, c, grpcurl)
	})

	t.Run("https dashboard with --tls-cert and --tokens", func(t *testing.T) { testHTTPS(t, c) })

	t.Run("python client", func(t *testing.T) { testPythonClient(t, c) })
	t.Run("node client", func(t *testing.T) { testNodeClient(t, c) })
}

// testGrpcurlBatch submits a batch with grpcurl, watches it to completion and checks every
// paper with GetPaper and ListPapers. One paper's first candidate URL is missing at the origin,
// so it succeeds on its second attempt from its second URL.
func testGrpcurlBatch(t *testing.T, c *binCluster, grpcurl string) {
	const batchID = "grpcurl-1"
	type paperSpec struct {
		PaperID string   `json:"paper_id"`
		URLs    []string `json:"urls"`
	}
	sizes := []int{65536, 200_000, 1_000_000}
	var papers []paperSpec
	wantSHA := map[string]string{}
	for i, size := range sizes {
		n := 10 + i
		id := fmt.Sprintf("%s-%d", batchID, i)
		papers = append(papers, paperSpec{PaperID: id, URLs: []string{fmt.Sprintf("%s/pdf/%d?size=%d", c.originURL, n, size)}})
		wantSHA[id] = c.originSHA256(t, n, int64(size))
	}
	fallback := &papers[len(papers)-1]
	fallback.URLs = append([]string{c.originURL + "/missing.pdf"}, fallback.URLs...)
	req, err := json.Marshal(map[string]any{"batch_id": batchID, "papers": papers})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, body string) string {
		return runTool(t, time.Minute, grpcurl, "-plaintext", "-d", body, c.coordAddr, "paperfetch.v1.CoordinatorService/"+method)
	}

	var submitted struct {
		BatchID string `json:"batchId"`
		Created bool   `json:"created"`
		Batch   struct {
			TotalPapers string `json:"totalPapers"`
		} `json:"batch"`
	}
	decodeOne(t, call("SubmitBatch", string(req)), &submitted)
	if submitted.BatchID != batchID || !submitted.Created || submitted.Batch.TotalPapers != fmt.Sprint(len(papers)) {
		t.Fatalf("SubmitBatch = %+v, want batch %s created with %d papers", submitted, batchID, len(papers))
	}

	// WatchBatch streams until the batch is terminal, then the server ends the stream.
	type batchJSON struct {
		BatchID string            `json:"batchId"`
		State   string            `json:"state"`
		Counts  map[string]string `json:"counts"`
	}
	var watch []struct {
		Snapshot bool      `json:"snapshot"`
		Batch    batchJSON `json:"batch"`
	}
	out := call("WatchBatch", fmt.Sprintf(`{"batch_id": %q}`, batchID))
	decodeStream(t, out, &watch)
	if len(watch) == 0 || !watch[0].Snapshot {
		t.Fatalf("WatchBatch:\n%s\nwant a snapshot first", out)
	}
	last := watch[len(watch)-1].Batch
	if last.State != "BATCH_STATE_COMPLETED" || last.Counts["succeeded"] != fmt.Sprint(len(papers)) {
		t.Fatalf("WatchBatch ended with %+v, want BATCH_STATE_COMPLETED with %d succeeded", last, len(papers))
	}

	var got struct{ Batch batchJSON }
	decodeOne(t, call("GetBatch", fmt.Sprintf(`{"batch_id": %q}`, batchID)), &got)
	if got.Batch.State != "BATCH_STATE_COMPLETED" {
		t.Errorf("GetBatch state %s, want BATCH_STATE_COMPLETED", got.Batch.State)
	}

	type paperJSON struct {
		Spec     struct{ PaperID string } `json:"spec"`
		State    string                   `json:"state"`
		Attempts int                      `json:"attempts"`
		SHA256   string                   `json:"sha256"`
		BlobKey  string                   `json:"blobKey"`
		FinalURL string                   `json:"finalUrl"`
	}
	var one struct{ Paper paperJSON }
	decodeOne(t, call("GetPaper", fmt.Sprintf(`{"batch_id": %q, "paper_id": %q}`, batchID, fallback.PaperID)), &one)
	if p := one.Paper; p.State != "PAPER_STATE_SUCCEEDED" || p.Attempts != 2 || p.FinalURL != fallback.URLs[1] || p.SHA256 != wantSHA[fallback.PaperID] {
		t.Errorf("GetPaper %s = %+v, want SUCCEEDED on attempt 2 from %s with sha256 %s", fallback.PaperID, p, fallback.URLs[1], wantSHA[fallback.PaperID])
	}

	var list struct{ Papers []paperJSON }
	decodeOne(t, call("ListPapers", fmt.Sprintf(`{"batch_id": %q, "states": ["PAPER_STATE_SUCCEEDED"]}`, batchID)), &list)
	if len(list.Papers) != len(papers) {
		t.Fatalf("ListPapers SUCCEEDED: %d papers, want %d", len(list.Papers), len(papers))
	}
	for _, p := range list.Papers {
		if p.SHA256 != wantSHA[p.Spec.PaperID] {
			t.Errorf("paper %s: sha256 %s, want %s", p.Spec.PaperID, p.SHA256, wantSHA[p.Spec.PaperID])
		}
		if _, err := os.Stat(filepath.Join(c.blobDir, filepath.FromSlash(p.BlobKey))); err != nil {
			t.Errorf("paper %s: blob %s: %v", p.Spec.PaperID, p.BlobKey, err)
		}
	}
	var failed struct{ Papers []paperJSON }
	decodeOne(t, call("ListPapers", fmt.Sprintf(`{"batch_id": %q, "states": ["PAPER_STATE_FAILED"]}`, batchID)), &failed)
	if len(failed.Papers) != 0 {
		t.Errorf("ListPapers FAILED: %+v, want none", failed.Papers)
	}
}

// testHTTPAPI runs the README's dashboard section against the binary: a batch submitted over
// /v1/ with a missing paper, the failed paper listed, retried over /v1/ and over gRPC, the
// dashboard page served.
func testHTTPAPI(t *testing.T, c *binCluster, grpcurl string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	do := func(method, path, body string) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.httpURL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	code, out := do("POST", "/v1/batches", fmt.Sprintf(`{"batchId": "web-1", "papers": [
		{"paperId": "paper-1", "urls": ["%s/pdf/1"]}, {"paperId": "paper-2", "urls": ["%s/missing.pdf"]}]}`, c.originURL, c.originURL))
	if code != http.StatusOK || !strings.Contains(out, `"created":true`) {
		t.Fatalf("POST /v1/batches: %d %s", code, out)
	}
	if code, out := do("GET", "/v1/batches/web-1:watch", ""); code != http.StatusOK || !strings.Contains(out, "BATCH_STATE_COMPLETED") {
		t.Fatalf("watch: %d %s", code, out)
	}
	code, out = do("GET", "/v1/batches/web-1/papers?states=PAPER_STATE_FAILED&pageSize=10", "")
	if code != http.StatusOK || !strings.Contains(out, `"paperId":"paper-2"`) || !strings.Contains(out, "FAILURE_REASON_NOT_FOUND") {
		t.Fatalf("failed papers: %d %s", code, out)
	}
	code, out = do("POST", "/v1/batches/web-1:retryFailed", "")
	if code != http.StatusOK || !strings.Contains(out, `"retried":"1"`) {
		t.Fatalf("retryFailed: %d %s", code, out)
	}
	if code, out := do("GET", "/v1/batches/nope", ""); code != http.StatusNotFound {
		t.Fatalf("unknown batch: %d %s", code, out)
	}
	if code, out := do("GET", "/", ""); code != http.StatusOK || !strings.Contains(out, "app.js") {
		t.Fatalf("dashboard: %d %s", code, out)
	}
	if code, out := do("GET", "/v1/batches/web-1:watch", ""); code != http.StatusOK || !strings.Contains(out, "BATCH_STATE_COMPLETED") {
		t.Fatalf("watch after retry: %d %s", code, out)
	}
	var r struct {
		Retried string `json:"retried"`
	}
	decodeOne(t, runTool(t, 30*time.Second, grpcurl, "-plaintext", "-d", `{"batch_id": "web-1"}`, c.coordAddr, "paperfetch.v1.CoordinatorService/RetryFailed"), &r)
	if r.Retried != "1" {
		t.Fatalf("grpcurl RetryFailed: retried %q", r.Retried)
	}
}

// testHTTPS starts a second coordinator configured as the Kubernetes manifests configure it
// (TLS certificate, client CA, client and fetcher tokens, --http-listen) and checks that its
// HTTP port speaks only HTTPS with the gRPC server's certificate, and that the client tokens
// guard /v1/ and the dashboard's data but not the page.
func testHTTPS(t *testing.T, c *binCluster) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "paperfetch test CA")
	certPath, keyPath := ca.Issue(t, "paperfetch-coordinator").Write(t, dir, "coordinator")
	caPath := ca.WriteCA(t, dir, "ca")
	tokens, fetcherTokens := filepath.Join(dir, "client-tokens"), filepath.Join(dir, "fetcher-tokens")
	tlstest.WriteFile(t, tokens, []byte("client-s3cret\n"))
	tlstest.WriteFile(t, fetcherTokens, []byte("fetcher-s3cret\n"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	coord := startBinProc(t, "tls coordinator", c.coordBin, jsonLogListen("coordinator started"),
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"),
		"--tls-cert", certPath, "--tls-key", keyPath, "--tls-client-ca", caPath,
		"--tokens", tokens, "--fetcher-tokens", fetcherTokens, "--max-conns-per-ip", "8")
	coord.waitStarted(t, ctx)
	addr := coord.httpAddr(t)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	do := func(c *http.Client, url, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.TLS == nil && strings.HasPrefix(url, "https:") {
			t.Fatalf("GET %s: not TLS", url)
		}
		return resp.StatusCode, string(b)
	}
	base := "https://" + addr
	if code, out := do(client, base+"/", ""); code != http.StatusOK || !strings.Contains(out, "app.js") {
		t.Fatalf("GET / over HTTPS: %d %s", code, out)
	}
	for _, p := range []string{"/v1/batches", "/ui/events"} {
		if code, out := do(client, base+p, ""); code != http.StatusUnauthorized {
			t.Fatalf("GET %s without a token: %d %s", p, code, out)
		}
		if code, out := do(client, base+p, "fetcher-s3cret"); code != http.StatusUnauthorized {
			t.Fatalf("GET %s with a fetcher token: %d %s", p, code, out)
		}
	}
	if code, out := do(client, base+"/v1/batches", "client-s3cret"); code != http.StatusOK || !strings.Contains(out, `"batches":[]`) {
		t.Fatalf("GET /v1/batches with the client token: %d %s", code, out)
	}
	// Plain HTTP on the port is refused (Go's HTTPS server answers 400 and closes).
	if code, out := do(http.DefaultClient, "http://"+addr+"/v1/batches", "client-s3cret"); code != http.StatusBadRequest ||
		!strings.Contains(out, "HTTPS server") {
		t.Fatalf("plain HTTP to the HTTPS port: %d %s", code, out)
	}
	// The HTTP port has the connection limits of the gRPC port: of 9 connections from one
	// address with --max-conns-per-ip 8, one at least is closed at once (an accepted one waits
	// for its TLS handshake).
	client.CloseIdleConnections()
	var conns []net.Conn
	for range 9 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	var refused atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for _, c := range conns {
		_ = c.SetReadDeadline(deadline)
		wg.Go(func() {
			var ne net.Error
			if _, err := c.Read(make([]byte, 1)); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Fatal("9 connections to the HTTP port from one address all accepted with --max-conns-per-ip 8")
	}
}

// binCluster is an origin, a coordinator and a fetcher running as processes on 127.0.0.1.
type binCluster struct {
	root        string // the module root (examples/ are under it)
	coordBin    string
	originBin   string
	blobDir     string
	originURL   string // http://127.0.0.1:PORT
	coordAddr   string
	httpURL     string // http://127.0.0.1:PORT of the coordinator's --http-listen
	fetcherAddr string
}

// startBinCluster builds the binaries and starts the three processes, each on a port the
// kernel picks, and waits until both gRPC servers report SERVING. Everything is stopped in
// t.Cleanup.
func startBinCluster(t *testing.T) *binCluster {
	t.Helper()
	start := time.Now()
	c := &binCluster{root: moduleRoot(t)}
	binDir := t.TempDir()
	buildBinaries(t, c.root, binDir)
	t.Logf("built the binaries in %v", time.Since(start).Round(time.Millisecond))

	dir := t.TempDir()
	c.blobDir = filepath.Join(dir, "blobs")
	blobURL := "file://" + c.blobDir
	c.originBin = filepath.Join(binDir, "origin")
	c.coordBin = filepath.Join(binDir, "coordinator")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	addrFile := filepath.Join(dir, "origin.addr")
	origin := startBinProc(t, "origin", c.originBin, textLogMsg("serving"),
		"--listen", "127.0.0.1:0", "--addr-file", addrFile)
	origin.waitStarted(t, ctx)
	// The origin writes --addr-file before it logs "serving".
	addr, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	c.originURL = "http://" + strings.TrimSpace(string(addr))

	coord := startBinProc(t, "coordinator", c.coordBin, jsonLogListen("coordinator started"),
		"--listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0",
		"--data", filepath.Join(dir, "data"),
		"--blob", blobURL,
		"--per-host-delay", "0s",
		"--per-host-concurrency", "8",
		"--retry-base-delay", "50ms",
	)
	c.coordAddr = coord.waitStarted(t, ctx)
	c.httpURL = "http://" + coord.httpAddr(t)

	fetcher := startBinProc(t, "fetcher", filepath.Join(binDir, "fetcher"), jsonLogListen("fetcher started"),
		"--coordinator", c.coordAddr,
		"--listen", "127.0.0.1:0",
		"--blob", blobURL,
		"--allow-private-networks",
		"--slots", "8",
		"--id", "binaries-test",
	)
	c.fetcherAddr = fetcher.waitStarted(t, ctx)

	waitServing(t, ctx, c.coordAddr)
	waitServing(t, ctx, c.fetcherAddr)
	t.Logf("cluster serving %v after start: origin %s, coordinator %s, fetcher %s",
		time.Since(start).Round(time.Millisecond), c.originURL, c.coordAddr, c.fetcherAddr)
	return c
}

// originSHA256 asks the origin binary for the digest of paper n at size bytes.
func (c *binCluster) originSHA256(t *testing.T, n int, size int64) string {
	t.Helper()
	return strings.TrimSpace(runTool(t, 30*time.Second, c.originBin, "--sha256", fmt.Sprint(n), "--size", fmt.Sprint(size)))
}

// moduleRoot is the folder of the main module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("go env GOMOD: not in a module")
	}
	return filepath.Dir(gomod)
}

// buildBinaries compiles the coordinator and the fetcher into dir, with -race when this test
// binary has it (as the fault suite does, so the two share the build cache), and the benchmark
// origin without it (it is test scaffolding, and -race makes each `origin --sha256` take a second).
func buildBinaries(t *testing.T, root, dir string) {
	t.Helper()
	race := false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			race = race || (s.Key == "-race" && s.Value == "true")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := func(race bool, pkgs ...string) {
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		if race {
			args = append(args, "-race")
		}
		args = append(args, pkgs...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	build(race, "./cmd/coordinator", "./cmd/fetcher")
	build(false, "./bench/origin")
}

// waitServing watches the gRPC health of addr until it reports SERVING or ctx ends.
func waitServing(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("health watch %s: %v", addr, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("health watch %s: %v", addr, err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

// binProc is one running binary. Its combined output is kept for failure messages.
type binProc struct {
	name string
	cmd  *exec.Cmd
	out  *startWatcher
	done chan struct{} // closed when the process has exited
}

// startBinProc starts bin; match recognises the log line that says it is listening and returns
// the address from it. The process is stopped (SIGTERM, then SIGKILL) in t.Cleanup.
func startBinProc(t *testing.T, name, bin string, match func(line string) (string, bool), args ...string) *binProc {
	t.Helper()
	p := &binProc{
		name: name,
		cmd:  exec.Command(bin, args...),
		out:  &startWatcher{match: match, found: make(chan string, 1)},
		done: make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		// Wait also waits for the output to be copied into p.out.
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// httpAddr returns the "http" address of the coordinator's "coordinator started" log line
// (after waitStarted).
func (p *binProc) httpAddr(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(p.out.String(), "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "coordinator started" && rec.HTTP != "" {
			return rec.HTTP
		}
	}
	t.Fatalf("%s logged no HTTP address; output:\n%s", p.name, p.out.String())
	return ""
}

// waitStarted returns the address from the process's "listening" log line.
func (p *binProc) waitStarted(t *testing.T, ctx context.Context) string {
	t.Helper()
	select {
	case addr := <-p.out.found:
		return addr
	case <-p.done:
		t.Fatalf("%s exited before it listened (%v); output:\n%s", p.name, p.cmd.ProcessState, p.out.String())
	case <-ctx.Done():
		t.Fatalf("%s did not start in time; output:\n%s", p.name, p.out.String())
	}
	return ""
}

// stop terminates the process gracefully, killing it if it has not exited after 10 s.
func (p *binProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		t.Errorf("%s did not stop within 10s of SIGTERM; killing it. Output:\n%s", p.name, p.out.String())
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	if t.Failed() {
		t.Logf("%s output:\n%s", p.name, p.out.String())
	}
}

// startWatcher keeps a process's output and reports the first line match recognises.
type startWatcher struct {
	match func(line string) (string, bool)
	found chan string // buffered; receives at most one address

	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	matched bool
}

// Write implements io.Writer for exec.Cmd's output copying.
func (w *startWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(b)
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if !w.matched {
			if addr, ok := w.match(line); ok {
				w.matched = true
				w.found <- addr
			}
		}
	}
	return len(b), nil
}

// String returns everything the process printed so far.
func (w *startWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// jsonLogListen matches the JSON (slog) log line with message msg and returns its "listen".
func jsonLogListen(msg string) func(string) (string, bool) {
	return func(line string) (string, bool) {
		var rec struct {
			Msg    string `json:"msg"`
			Listen string `json:"listen"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != msg || rec.Listen == "" {
			return "", false
		}
		return rec.Listen, true
	}
}

// textLogMsg matches the text (slog) log line with message msg.
func textLogMsg(msg string) func(string) (string, bool) {
	return func(line string) (string, bool) {
		return "", strings.Contains(line, " msg="+msg+" ") || strings.HasSuffix(line, " msg="+msg)
	}
}

// findTool looks name up in PATH, $GOPATH/bin and ~/go/bin, and skips the test with the
// install command when it is in none of them.
func findTool(t *testing.T, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skipf("%s is not installed (looked in PATH, $GOPATH/bin, ~/go/bin); install it with: %s", name, install)
	return ""
}

// runTool runs a command to completion within timeout and returns its standard output; it fails
// the test with the standard error when the command fails.
func runTool(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	return runToolIn(t, "", timeout, name, args...)
}

// runToolIn is runTool in the folder dir ("" is the test's).
func runToolIn(t *testing.T, dir string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	// grpc-health-probe prints its verdict on stderr.
	if stdout.Len() == 0 {
		return stderr.String()
	}
	return stdout.String()
}

// decodeOne decodes grpcurl's JSON output of a unary call into v.
func decodeOne(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
}

// decodeStream decodes grpcurl's output of a streaming call (one JSON object per message) into
// the slice *v points to.
func decodeStream[T any](t *testing.T, out string, v *[]T) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var m T
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("decode stream %q: %v", out, err)
		}
		*v = append(*v, m)
	}
}
