package fetcher

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// TestFailureLogRedacted: a failed download's error quotes its URL (Go's HTTP client errors
// do); the fetcher's log must not carry the URL's query-string secrets (issue 10, item 10).
func TestFailureLogRedacted(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	_ = lis.Close() // nothing listens there: the download fails with "connection refused"
	logs := &syncbuf.Buffer{}
	h := newWorkHarness(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	s := h.stream(t)
	s.next(t) // Hello
	signed := "http://" + closed + "/p.pdf?X-Amz-Credential=AKIAFETCHERSECRET&X-Amz-Signature=deadbeefsig&id=7"
	s.push(t, assign("L1", signed))
	for {
		ev := s.next(t).GetEvent()
		if ev.GetFailed() != nil {
			// The failure is logged before its event is sent.
			s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: "L1", Sequence: ev.GetSequence()}}})
			break
		}
	}
	h.waitLeases(t, 0)
	log := logs.String()
	if !strings.Contains(log, "download failed") || !strings.Contains(log, "X-Amz-Signature=REDACTED") {
		t.Fatalf("no redacted failure in the log:\n%s", log)
	}
	for _, secret := range []string{"AKIAFETCHERSECRET", "deadbeefsig"} {
		if strings.Contains(log, secret) {
			t.Errorf("the fetcher's log holds %q:\n%s", secret, log)
		}
	}
}
