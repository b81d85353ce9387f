package grpcserver

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// records parses JSON log lines.
func records(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("not a JSON record: %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// callRecords returns the records of msg for method.
func callRecords(recs []map[string]any, msg, method string) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["msg"] == msg && r["grpc.method"] == method {
			out = append(out, r)
		}
	}
	return out
}

// callEach makes okGets successful GetBatch calls under ctx, then one invalid GetBatch (no
// batch id, no deadline), a ListBatches (the fake panics) and a WatchBatch read to its end.
func callEach(ctx context.Context, t *testing.T, c pb.CoordinatorServiceClient, okGets int) {
	t.Helper()
	for range okGets {
		if _, err := c.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b1"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.GetBatch(t.Context(), &pb.GetBatchRequest{})
	wantCode(t, "GetBatch without an id", err, codes.InvalidArgument)
	_, err = c.ListBatches(ctx, &pb.ListBatchesRequest{})
	wantCode(t, "ListBatches", err, codes.Internal)
	ws, err := c.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = ws.Recv()
	}
}

// The end of every call but health checks is logged with the fields operators read
// (docs/operations.md), at the level of its code; its start at debug level.
func TestCallLog(t *testing.T) {
	var buf syncbuf.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := startServerLogged(t, logger, roleCoordinator, "--rate-limit", "0")
	conn := dial(t, ts.addr)
	c := pb.NewCoordinatorServiceClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	callEach(ctx, t, c, 1)
	if err := openWork(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	ts.stop(t) // every call's end is logged before the server stops

	recs := records(t, buf.String())
	for _, r := range recs {
		if r["grpc.service"] == healthpb.Health_ServiceDesc.ServiceName {
			t.Errorf("a health check was logged: %v", r)
		}
	}
	got := callRecords(recs, "finished call", "GetBatch")
	if len(got) != 2 {
		t.Fatalf("GetBatch: %d finished call records, want 2: %v", len(got), recs)
	}
	ok, bad := got[0], got[1]
	if ok["grpc.code"] != "OK" {
		ok, bad = bad, ok
	}
	for k, want := range map[string]any{"level": "INFO", "protocol": "grpc", "grpc.component": "server",
		"grpc.service": "paperfetch.v1.CoordinatorService", "grpc.method": "GetBatch", "grpc.method_type": "unary", "grpc.code": "OK"} {
		if ok[k] != want {
			t.Errorf("GetBatch record %s = %v, want %v (%v)", k, ok[k], want, ok)
		}
	}
	if p, _ := ok["peer.address"].(string); !strings.HasPrefix(p, "127.0.0.1:") {
		t.Errorf("peer.address = %v, want the client's 127.0.0.1 address", ok["peer.address"])
	}
	for _, k := range []string{"grpc.start_time", "grpc.request.deadline"} {
		if _, err := time.Parse(time.RFC3339, ok[k].(string)); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	if ms, err := strconv.ParseFloat(ok["grpc.time_ms"].(string), 64); err != nil || ms < 0 {
		t.Errorf("grpc.time_ms = %v (%v), want milliseconds", ok["grpc.time_ms"], err)
	}
	if _, has := ok["grpc.error"]; has {
		t.Errorf("a successful call has grpc.error: %v", ok)
	}
	if bad["level"] != "INFO" || bad["grpc.code"] != "InvalidArgument" || bad["grpc.error"] == nil {
		t.Errorf("invalid GetBatch logged %v, want INFO with InvalidArgument and its error", bad)
	}
	if _, has := bad["grpc.request.deadline"]; has {
		t.Errorf("a call without a deadline has grpc.request.deadline: %v", bad)
	}
	if got := callRecords(recs, "finished call", "ListBatches"); len(got) != 1 || got[0]["level"] != "ERROR" || got[0]["grpc.code"] != "Internal" {
		t.Errorf("panicking ListBatches logged %v, want one ERROR record with code Internal", got)
	}
	for method, typ := range map[string]string{"WatchBatch": "server_stream", "Work": "bidi_stream"} {
		got := callRecords(recs, "finished call", method)
		if len(got) != 1 || got[0]["grpc.method_type"] != typ || got[0]["grpc.code"] != "OK" {
			t.Errorf("%s logged %v, want one finished call of a %s with code OK", method, got, typ)
		}
	}
	if got := callRecords(recs, "started call", "GetBatch"); len(got) != 2 || got[0]["level"] != "DEBUG" {
		t.Errorf("GetBatch's starts logged %v, want two DEBUG records", got)
	}
}

// At info level, the start of a call is not logged.
func TestCallLogInfoLevel(t *testing.T) {
	var buf syncbuf.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ts := startServerLogged(t, logger, roleCoordinator)
	if _, err := pb.NewCoordinatorServiceClient(dial(t, ts.addr)).GetBatch(t.Context(), &pb.GetBatchRequest{BatchId: "b1"}); err != nil {
		t.Fatal(err)
	}
	ts.stop(t)
	recs := records(t, buf.String())
	if got := callRecords(recs, "started call", "GetBatch"); len(got) != 0 {
		t.Errorf("started call logged at info level: %v", got)
	}
	if got := callRecords(recs, "finished call", "GetBatch"); len(got) != 1 {
		t.Errorf("finished call records: %v, want one", got)
	}
}

// Calls beyond the server's stream workers still run: with more long streams open than there are
// workers, a unary call is answered.
func TestCallsBeyondStreamWorkers(t *testing.T) {
	ts := startCoordinator(t)
	conn := dial(t, ts.addr)
	c := pb.NewCoordinatorServiceClient(conn)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const streams = streamWorkers + 8
	for range streams {
		if _, err := c.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: "block"}); err != nil {
			t.Fatal(err)
		}
	}
	for range streams {
		<-ts.fake.blocked // every stream's handler is running, and holds its goroutine
	}
	if _, err := c.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b1"}); err != nil {
		t.Fatalf("GetBatch while %d streams run: %v", streams, err)
	}
	ts.fake.releaseAll()
}

// The successful calls of the role's Polls are logged at debug, their failures as any call's;
// other methods keep info.
func TestCallLogPolls(t *testing.T) {
	var buf syncbuf.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	role := roleCoordinator
	role.Polls = []string{pb.CoordinatorService_GetBatch_FullMethodName, pb.CoordinatorService_WatchBatch_FullMethodName}
	ts := startServerLogged(t, logger, role, "--rate-limit", "0")
	c := pb.NewCoordinatorServiceClient(dial(t, ts.addr))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	callEach(ctx, t, c, 3)
	ts.stop(t)

	recs := records(t, buf.String())
	levels := func(method string) map[string]int {
		n := map[string]int{}
		for _, r := range callRecords(recs, "finished call", method) {
			n[r["level"].(string)+" "+r["grpc.code"].(string)]++
		}
		return n
	}
	if got, want := levels("GetBatch"), map[string]int{"DEBUG OK": 3, "INFO InvalidArgument": 1}; !maps.Equal(got, want) {
		t.Errorf("GetBatch finished calls by level and code: %v, want %v", got, want)
	}
	if got, want := levels("WatchBatch"), map[string]int{"DEBUG OK": 1}; !maps.Equal(got, want) {
		t.Errorf("WatchBatch (a stream in Polls): %v, want %v", got, want)
	}
	if got, want := levels("ListBatches"), map[string]int{"ERROR Internal": 1}; !maps.Equal(got, want) {
		t.Errorf("ListBatches (not in Polls): %v, want %v", got, want)
	}
}
