package grpcserver

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/grpcclient"
	"github.com/paperfetch/paperfetch/internal/tlsreload/tlstest"
)

func withToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func TestTokenAuth(t *testing.T) {
	dir := t.TempDir()
	tokens := writeFile(t, dir, "tokens", "# clients\nsecret-1\n")
	ts := startCoordinator(t, "--tokens", tokens)
	conn := dial(t, ts.addr)
	c := pb.NewCoordinatorServiceClient(conn)
	ctx := t.Context()

	_, err := c.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "no token", err, codes.Unauthenticated)
	_, err = c.GetBatch(withToken(ctx, "wrong"), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "wrong token", err, codes.Unauthenticated)
	_, err = c.GetBatch(withToken(ctx, "secret-1"), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "right token", err, codes.OK)

	// Streams are guarded too.
	ws, err := c.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: "b"})
	if err == nil {
		_, err = ws.Recv()
	}
	wantCode(t, "stream without token", err, codes.Unauthenticated)

	// Health and reflection need no token.
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without token: %v %v", hr, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rs.Recv()
	if err != nil || !strings.Contains(fmt.Sprint(rr.GetListServicesResponse()), "paperfetch.v1.CoordinatorService") {
		t.Fatalf("reflection without token: %v %v", rr, err)
	}
	_ = rs.CloseSend()

	// Rotating the token file takes effect on reload.
	writeFile(t, dir, "tokens", "secret-2\n")
	ts.srv.Reload()
	_, err = c.GetBatch(withToken(ctx, "secret-1"), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "revoked token", err, codes.Unauthenticated)
	_, err = c.GetBatch(withToken(ctx, "secret-2"), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "new token", err, codes.OK)
}

func TestOpenWithoutTokens(t *testing.T) {
	ts := startCoordinator(t)
	conn := dial(t, ts.addr)
	_, err := pb.NewCoordinatorServiceClient(conn).GetBatch(t.Context(), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "open client API", err, codes.OK)
	wantCode(t, "open gateway", openWork(t.Context(), conn), codes.OK)
}

func TestGatewayNeedsFetcherCredentials(t *testing.T) {
	dir := t.TempDir()
	ts := startCoordinator(t,
		"--tokens", writeFile(t, dir, "tokens", "client-token\n"),
		"--fetcher-tokens", writeFile(t, dir, "fetcher-tokens", "fetcher-token\n"))
	conn := dial(t, ts.addr)
	ctx := t.Context()
	wantCode(t, "Work without credentials", openWork(ctx, conn), codes.Unauthenticated)
	wantCode(t, "Work with a client token", openWork(withToken(ctx, "client-token"), conn), codes.Unauthenticated)
	wantCode(t, "Work with the fetcher token", openWork(withToken(ctx, "fetcher-token"), conn), codes.OK)
	_, err := pb.NewCoordinatorServiceClient(conn).GetBatch(withToken(ctx, "fetcher-token"), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "client API with the fetcher token", err, codes.Unauthenticated)

	// The fetcher's client flags: --token-file over loopback (no TLS needed there).
	fconn := dial(t, ts.addr, "--token-file", writeFile(t, dir, "fetcher.token", "fetcher-token\n"))
	wantCode(t, "Work via --token-file", openWork(ctx, fconn), codes.OK)
}

// pki writes a CA, a server pair, a fetcher client pair and a pair from a foreign CA.
type pki struct {
	ca, serverCert, serverKey, fetcherCert, fetcherKey, rogueCert, rogueKey string
	ca2                                                                     *tlstest.CA
	authority                                                               *tlstest.CA
	dir                                                                     string
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "paperfetch test CA")
	rogue := tlstest.NewCA(t, "rogue CA")
	p := &pki{dir: dir, authority: ca, ca2: rogue}
	p.ca = ca.WriteCA(t, dir, "ca")
	p.serverCert, p.serverKey = ca.Issue(t, "coordinator", "paperfetch-coordinator").Write(t, dir, "server")
	p.fetcherCert, p.fetcherKey = ca.Issue(t, "fetcher-0").Write(t, dir, "fetcher")
	p.rogueCert, p.rogueKey = rogue.Issue(t, "intruder").Write(t, dir, "rogue")
	return p
}

func TestMTLS(t *testing.T) {
	p := newPKI(t)
	ts := startCoordinator(t,
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca,
		"--tokens", writeFile(t, p.dir, "tokens", "client-token\n"))
	ctx := t.Context()

	// A fetcher with a certificate from the CA opens Work without any token.
	fetcher := dial(t, ts.addr, "--tls-ca", p.ca, "--tls-cert", p.fetcherCert, "--tls-key", p.fetcherKey)
	wantCode(t, "Work with a client certificate", openWork(ctx, fetcher), codes.OK)
	// A verified certificate is not a credential for the client API.
	_, err := pb.NewCoordinatorServiceClient(fetcher).GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "client API with only a certificate", err, codes.Unauthenticated)

	// TLS without a client certificate: the handshake succeeds, the gateway refuses.
	anon := dial(t, ts.addr, "--tls-ca", p.ca)
	wantCode(t, "Work without a certificate", openWork(ctx, anon), codes.Unauthenticated)
	// A CLI user: TLS plus a bearer token.
	cli := dial(t, ts.addr, "--tls-ca", p.ca, "--token-file", writeFile(t, p.dir, "cli.token", "client-token\n"))
	_, err = pb.NewCoordinatorServiceClient(cli).GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "client API over TLS with token", err, codes.OK)

	// A certificate from another CA fails the handshake.
	rogue := dial(t, ts.addr, "--tls-ca", p.ca, "--tls-cert", p.rogueCert, "--tls-key", p.rogueKey)
	if err := openWork(ctx, rogue); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Work with a foreign certificate: %v, want refused", err)
	}
	// A plaintext client cannot talk to the TLS server.
	plain := dial(t, ts.addr)
	ctxShort, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(plain).Check(ctxShort, &healthpb.HealthCheckRequest{})
	if err == nil {
		t.Fatal("plaintext client reached the TLS server")
	}
}

func TestCertificateReload(t *testing.T) {
	p := newPKI(t)
	ts := startCoordinator(t, "--tls-cert", p.serverCert, "--tls-key", p.serverKey)
	serverSerial := func() string {
		t.Helper()
		conn := dial(t, ts.addr, "--tls-ca", p.ca)
		var pr peer.Peer
		if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}, grpc.Peer(&pr)); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close()
		info := pr.AuthInfo.(credentials.TLSInfo)
		return info.State.PeerCertificates[0].SerialNumber.String()
	}
	first := serverSerial()
	rotated := p.authority.Issue(t, "coordinator-rotated")
	rotated.Write(t, p.dir, "server")
	if got := serverSerial(); got != first {
		t.Fatalf("certificate changed before reload: %s", got)
	}
	ts.srv.Reload()
	if got := serverSerial(); got != rotated.Serial.String() {
		t.Fatalf("serial after reload = %s, want %s (first %s)", got, rotated.Serial, first)
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	ts := startCoordinator(t)
	c := pb.NewCoordinatorServiceClient(dial(t, ts.addr))
	_, err := c.ListBatches(t.Context(), &pb.ListBatchesRequest{})
	wantCode(t, "panicking handler", err, codes.Internal)
	if strings.Contains(status.Convert(err).Message(), "boom") {
		t.Fatalf("panic value leaked to the client: %v", err)
	}
	_, err = c.GetBatch(t.Context(), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "call after the panic", err, codes.OK)
}

func TestValidationAtTheBoundary(t *testing.T) {
	ts := startCoordinator(t)
	c := pb.NewCoordinatorServiceClient(dial(t, ts.addr))
	ctx := t.Context()
	ok := &pb.PaperSpec{PaperId: "p", Urls: []string{"https://example.org/p.pdf"}}
	many := make([]*pb.PaperSpec, 5001)
	for i := range many {
		many[i] = &pb.PaperSpec{PaperId: strconv.Itoa(i), Urls: []string{"https://example.org/x.pdf"}}
	}
	tests := []struct {
		name   string
		req    *pb.SubmitBatchRequest
		prefix string
	}{
		{"empty batch", &pb.SubmitBatchRequest{}, "papers: "},
		{"bad URL scheme", &pb.SubmitBatchRequest{Papers: []*pb.PaperSpec{ok, {PaperId: "q", Urls: []string{"ftp://example.org/q.pdf"}}}}, `papers[1].urls[0]: scheme "ftp" is not http or https`},
		{"oversized batch", &pb.SubmitBatchRequest{Papers: many}, "papers: 5001 papers exceed"},
		{"id with NUL", &pb.SubmitBatchRequest{Papers: []*pb.PaperSpec{{PaperId: "a\x00b", Urls: []string{"https://example.org/"}}}}, "papers[0].paper_id: contains NUL"},
	}
	for _, tt := range tests {
		_, err := c.SubmitBatch(ctx, tt.req)
		wantCode(t, tt.name, err, codes.InvalidArgument)
		if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, tt.prefix) {
			t.Errorf("%s: message %q, want prefix %q", tt.name, msg, tt.prefix)
		}
	}
	if _, err := c.SubmitBatch(ctx, &pb.SubmitBatchRequest{Papers: []*pb.PaperSpec{ok}}); err != nil {
		t.Fatalf("valid batch: %v", err)
	}
	// Server streams validate their request too.
	ws, err := c.WatchBatch(ctx, &pb.WatchBatchRequest{})
	if err == nil {
		_, err = ws.Recv()
	}
	wantCode(t, "WatchBatch without batch_id", err, codes.InvalidArgument)
}

func TestRateLimit(t *testing.T) {
	// A rate this small refills nothing during the test: exactly the burst passes.
	ts := startCoordinator(t, "--rate-limit", "0.001", "--rate-burst", "3")
	conn := dial(t, ts.addr)
	c := pb.NewCoordinatorServiceClient(conn)
	ctx := t.Context()
	for i := range 3 {
		if _, err := c.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"}); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	_, err := c.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "call beyond the burst", err, codes.ResourceExhausted)
	for i := range 20 {
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health check %d rate-limited: %v", i, err)
		}
		if i < 5 {
			wantCode(t, "fetcher gateway", openWork(ctx, conn), codes.OK)
		}
	}
}

var handledRE = regexp.MustCompile(`(?m)^grpc_server_handled_total\{grpc_code="OK",grpc_method="GetBatch",grpc_service="paperfetch.v1.CoordinatorService",grpc_type="unary"\} (\d+)`)

func TestMetricsEndpoint(t *testing.T) {
	ts := startCoordinator(t, "--metrics-listen", "127.0.0.1:0")
	scrape := func() (string, int) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ts.metrics+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		m := handledRE.FindStringSubmatch(string(body))
		if m == nil {
			t.Fatalf("no grpc_server_handled_total for GetBatch in:\n%.2000s", body)
		}
		n, _ := strconv.Atoi(m[1])
		return string(body), n
	}
	body, before := scrape()
	if before != 0 {
		t.Fatalf("handled before any call = %d", before)
	}
	for _, want := range []string{"grpc_server_handling_seconds_bucket", "go_goroutines", "process_"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	c := pb.NewCoordinatorServiceClient(dial(t, ts.addr))
	for range 3 {
		if _, err := c.GetBatch(t.Context(), &pb.GetBatchRequest{BatchId: "b"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, after := scrape(); after != 3 {
		t.Fatalf("handled after 3 calls = %d", after)
	}
}

func TestGracefulServe(t *testing.T) {
	ts := startCoordinator(t, "--health-listen", "127.0.0.1:0", "--grpc-hard-stop-timeout", "1m")
	ctx := t.Context()
	// Watch readiness on the plaintext health port, which outlives the main port's drain.
	hc := healthpb.NewHealthClient(dial(t, ts.health))
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("initial readiness: %v %v", r, err)
	}
	// A call in flight holds the drain open.
	c := pb.NewCoordinatorServiceClient(dial(t, ts.addr))
	ws, err := c.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: "block"})
	if err != nil {
		t.Fatal(err)
	}
	<-ts.fake.watchStarted

	ts.cancel() // begin the shutdown
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("readiness on shutdown: %v %v", r, err)
	}
	live, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: LivenessService})
	if err != nil || live.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("liveness while draining: %v %v", live, err)
	}
	// The call in flight completes normally.
	ts.fake.releaseAll()
	if m, err := ws.Recv(); err != nil || m.GetBatch().GetBatchId() != "block" {
		t.Fatalf("in-flight call during drain: %v %v", m, err)
	}
	if err := <-ts.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	close(ts.done)
}

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t)
	for _, args := range [][]string{
		{"--tls-cert", p.serverCert},
		{"--tls-client-ca", p.ca},
		{"--tls-cert", p.serverCert, "--tls-key", p.fetcherKey},
		{"--tokens", writeFile(t, dir, "empty", "# nothing\n")},
		{"--fetcher-tokens", dir + "/missing"},
	} {
		fs := flagSet(t, args...)
		if _, err := fs.NewServer(testLogger(t), nil); err == nil {
			t.Errorf("NewServer(%q) succeeded", args)
		}
	}
}

// TestSharedTLSFlags checks that a binary registering both client and server flags (the
// fetcher) gets one --tls-cert/--tls-key, used by both.
func TestSharedTLSFlags(t *testing.T) {
	p := newPKI(t)
	fs := flag.NewFlagSet("fetcher", flag.ContinueOnError)
	clientFlags := grpcclient.RegisterFlags(fs)
	srvFlags := RegisterFlags(fs, roleFetcher)
	if err := fs.Parse([]string{"--tls-cert", p.fetcherCert, "--tls-key", p.fetcherKey, "--tls-ca", p.ca}); err != nil {
		t.Fatal(err)
	}
	if c, k := srvFlags.keyPair.Files(); c != p.fetcherCert || k != p.fetcherKey {
		t.Fatalf("server flags see %q %q", c, k)
	}
	creds, err := clientFlags.TransportCredentials()
	if err != nil || creds.Info().SecurityProtocol != "tls" {
		t.Fatalf("client credentials: %v %v", creds, err)
	}
}

// TestReloadLoop checks that the owned reload loop picks up a rotated token file by itself.
func TestReloadLoop(t *testing.T) {
	dir := t.TempDir()
	ts := startCoordinator(t, "--tokens", writeFile(t, dir, "tokens", "old\n"), "--reload-interval", "20ms")
	c := pb.NewCoordinatorServiceClient(dial(t, ts.addr))
	writeFile(t, dir, "tokens", "new\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.GetBatch(withToken(t.Context(), "new"), &pb.GetBatchRequest{BatchId: "b"})
		if err == nil {
			break
		}
		wantCode(t, "new token before the reload", err, codes.Unauthenticated)
		if time.Now().After(deadline) {
			t.Fatal("the reload loop never picked up the rotated token file")
		}
		runtime.Gosched()
		<-time.After(5 * time.Millisecond) // polling an external effect (a file watched by a timer), not ordering goroutines
	}
	_, err := c.GetBatch(withToken(t.Context(), "old"), &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "old token after the reload", err, codes.Unauthenticated)
}
