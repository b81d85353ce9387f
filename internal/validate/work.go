package validate

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Limits of the fetcher gateway (FetcherGatewayService.Work). They mirror the comments of
// fetcher_gateway_service.proto and paper.proto.
const (
	// MaxFetcherSlots is the largest Hello.slots (and Credits.credits, WorkRequest.folded_credits).
	MaxFetcherSlots = 10_000
	// MaxFetcherPrefetch is the largest Hello.prefetch (the prefetch window).
	MaxFetcherPrefetch = 1_000
	// MaxFetcherIDBytes is the longest Hello.fetcher_id.
	MaxFetcherIDBytes = 128
	// MaxBootIDBytes is the longest Hello.boot_id.
	MaxBootIDBytes = 64
	// MaxVersionBytes is the longest Hello.version.
	MaxVersionBytes = 64
	// MaxInFlight is the most leases one Hello may re-announce (running plus finished but not
	// yet acknowledged: at most twice the slots).
	MaxInFlight = 2 * MaxFetcherSlots
	// MaxLeaseIDBytes is the longest lease id.
	MaxLeaseIDBytes = 128
	// MaxAttempt is the largest attempt number.
	MaxAttempt = math.MaxUint16
	// MaxReasonBytes is the longest Draining.reason.
	MaxReasonBytes = 1024
	// MaxEventMessageBytes is the longest DownloadFailed.message.
	MaxEventMessageBytes = 4096
	// MaxContentTypeBytes is the longest DownloadCompleted.content_type.
	MaxContentTypeBytes = 256
	// MaxResolveCandidates is the most candidate URLs one ResolveResult may carry.
	MaxResolveCandidates = 8
	// MaxResolveNoteBytes is the longest ResolveResult.note.
	MaxResolveNoteBytes = 1024
	// MaxBlobBytes is the largest size a completion may report (1 TiB).
	MaxBlobBytes = 1 << 40
	// MaxStartHold is the longest a fetcher holds a started event back to fold it into a later
	// event of its lease (Welcome.start_hold, step 8 of the Work protocol), whatever the
	// Welcome says; a coordinator offers a tenth of its start timeout, at most this.
	MaxStartHold = time.Second
	// MaxWorkBatch is the most events one WorkRequest carries (event plus more_events), and the
	// most Assigns (Acks) one WorkResponse carries (step 9 of the Work protocol: batching).
	MaxWorkBatch = 64
)

// WorkRequest validates one message a fetcher sent on its Work stream. first says whether it
// is the stream's first message, which must be a Hello (and only the first may be one). It
// returns nil or an *Error (INVALID_ARGUMENT with a BadRequest detail). It only looks at the
// message: whether a lease exists or belongs to the stream is the coordinator's business.
func WorkRequest(first bool, m *pb.WorkRequest) error {
	var v violations
	if m == nil {
		v.add("msg", "is null")
		return v.err()
	}
	if n := m.GetFoldedCredits(); n != 0 {
		switch {
		case m.GetEvent() == nil:
			v.add("folded_credits", "may only be set on a message carrying an event")
		case n < 0 || n > MaxFetcherSlots:
			v.add("folded_credits", fmt.Sprintf("must be 0 to %d, got %d", MaxFetcherSlots, n))
		}
	}
	if more := m.GetMoreEvents(); len(more) > 0 {
		switch {
		case m.GetEvent() == nil:
			v.add("more_events", "may only be set on a message carrying an event")
		case len(more) > MaxWorkBatch-1:
			v.add("more_events", fmt.Sprintf("%d events exceed the limit of %d (%d per message with event)", len(more), MaxWorkBatch-1, MaxWorkBatch))
		default:
			for i, ev := range more {
				v.eventAt(i, ev)
				if len(v.list) >= maxViolations {
					break
				}
			}
		}
	}
	switch x := m.GetMsg().(type) {
	case *pb.WorkRequest_Hello:
		if !first {
			v.add("hello", "only the first message of a stream may be a hello")
			break
		}
		v.hello("hello", x.Hello)
	case nil:
		v.add("msg", "exactly one of hello, credits, event, draining, heartbeat is required")
	default:
		if first {
			v.add("hello", "the first message of a Work stream must be a hello")
			break
		}
		switch x := x.(type) {
		case *pb.WorkRequest_Credits:
			if n := x.Credits.GetCredits(); n < 1 || n > MaxFetcherSlots {
				v.add("credits.credits", fmt.Sprintf("must be 1 to %d, got %d", MaxFetcherSlots, n))
			}
		case *pb.WorkRequest_Event:
			v.event(x.Event)
		case *pb.WorkRequest_Draining:
			v.text("draining.reason", x.Draining.GetReason(), MaxReasonBytes)
		case *pb.WorkRequest_Heartbeat:
		}
	}
	return v.err()
}

// FetcherID validates a fetcher id: 1 to MaxFetcherIDBytes bytes of printable UTF-8 without
// white space.
func FetcherID(path, id string) error {
	var v violations
	v.fetcherID(path, id)
	return v.err()
}

func (v *violations) hello(path string, h *pb.Hello) {
	if h == nil {
		v.add(path, "is null")
		return
	}
	v.fetcherID(field(path, "fetcher_id"), h.GetFetcherId())
	v.text(field(path, "boot_id"), h.GetBootId(), MaxBootIDBytes)
	v.text(field(path, "version"), h.GetVersion(), MaxVersionBytes)
	if n := h.GetSlots(); n < 1 || n > MaxFetcherSlots {
		v.add(field(path, "slots"), fmt.Sprintf("must be 1 to %d, got %d", MaxFetcherSlots, n))
	}
	if n := h.GetPrefetch(); n < 0 || n > MaxFetcherPrefetch {
		v.add(field(path, "prefetch"), fmt.Sprintf("must be 0 to %d, got %d", MaxFetcherPrefetch, n))
	}
	fl := h.GetInFlight()
	if len(fl) > MaxInFlight {
		v.add(field(path, "in_flight"), fmt.Sprintf("%d leases exceed the limit of %d", len(fl), MaxInFlight))
		return
	}
	for i, l := range fl {
		p := index(field(path, "in_flight"), i)
		if l == nil {
			v.add(p, "is null")
			continue
		}
		v.leaseID(field(p, "lease_id"), l.GetLeaseId())
		v.attempt(field(p, "attempt"), l.GetAttempt())
		v.optionalBatchID(field(p, "batch_id"), l.GetBatchId())
		v.optionalPaperID(field(p, "paper_id"), l.GetPaperId())
		if len(v.list) >= maxViolations {
			return
		}
	}
}

// eventAt validates more_events[i]: as event, its violations' paths renamed afterwards, so
// that a valid event costs no path strings.
func (v *violations) eventAt(i int, ev *pb.DownloadEvent) {
	var ev2 violations
	ev2.event(ev)
	if len(ev2.list) == 0 {
		return
	}
	p := index("more_events", i)
	for _, x := range ev2.list {
		v.add(p+strings.TrimPrefix(x.Field, "event"), x.Description)
	}
	v.dropped += ev2.dropped
}

// event validates WorkRequest.event. The field paths are constants, not built per call: a valid
// event (two or three per paper) then costs no allocation.
func (v *violations) event(ev *pb.DownloadEvent) {
	if ev == nil {
		v.add("event", "is null")
		return
	}
	v.leaseID("event.lease_id", ev.GetLeaseId())
	v.attempt("event.attempt", ev.GetAttempt())
	if ev.GetSequence() < 1 {
		v.add("event.sequence", fmt.Sprintf("must be at least 1, got %d", ev.GetSequence()))
	}
	v.optionalBatchID("event.batch_id", ev.GetBatchId())
	v.optionalPaperID("event.paper_id", ev.GetPaperId())
	v.timestamp("event.time", ev.GetTime())
	switch k := ev.GetKind().(type) {
	case *pb.DownloadEvent_Started:
		if ev.GetFoldedStart() {
			v.add("event.folded_start", "must not be set on a started event")
		}
		v.optionalURL("event.started.url", k.Started.GetUrl())
		if k.Started.GetResumeOffset() < 0 {
			v.add("event.started.resume_offset", "must not be negative")
		}
	case *pb.DownloadEvent_Progress:
		p := k.Progress
		if p.GetBytes() < 0 || p.GetBytes() > MaxBlobBytes {
			v.add("event.progress.bytes", fmt.Sprintf("must be 0 to %d", int64(MaxBlobBytes)))
		}
		if p.GetTotal() < 0 || p.GetTotal() > MaxBlobBytes {
			v.add("event.progress.total", fmt.Sprintf("must be 0 to %d", int64(MaxBlobBytes)))
		}
		if bps := p.GetBytesPerSecond(); math.IsNaN(bps) || math.IsInf(bps, 0) || bps < 0 {
			v.add("event.progress.bytes_per_second", "must be a finite number, at least 0")
		}
	case *pb.DownloadEvent_Completed:
		v.completed(k.Completed)
	case *pb.DownloadEvent_Failed:
		v.failed(k.Failed)
	case *pb.DownloadEvent_Resolved:
		v.resolved(k.Resolved)
	default:
		v.add("event", "exactly one of started, progress, completed, failed, resolved is required")
	}
}

// completed validates event.completed.
func (v *violations) completed(c *pb.DownloadCompleted) {
	sha := c.GetSha256()
	if !isLowerHex(sha, SHA256HexLen) {
		v.add("event.completed.sha256", fmt.Sprintf("must be %d lower-case hex digits", SHA256HexLen))
	} else if !isContentKey(c.GetBlobKey(), sha) {
		v.add("event.completed.blob_key", fmt.Sprintf("must be the content-addressed key of sha256, %q", ContentKey(sha)))
	}
	if n := c.GetSize(); n < 1 || n > MaxBlobBytes {
		v.add("event.completed.size", fmt.Sprintf("must be 1 to %d, got %d", int64(MaxBlobBytes), n))
	}
	v.text("event.completed.content_type", c.GetContentType(), MaxContentTypeBytes)
	v.optionalURL("event.completed.final_url", c.GetFinalUrl())
	v.duration("event.completed.duration", c.GetDuration())
}

// failed validates event.failed.
func (v *violations) failed(f *pb.DownloadFailed) {
	if _, ok := pb.FailureClass_name[int32(f.GetClass())]; !ok {
		v.add("event.failed.class", fmt.Sprintf("%d is not a failure class", int32(f.GetClass())))
	}
	if _, ok := pb.FailureReason_name[int32(f.GetReason())]; !ok {
		v.add("event.failed.reason", fmt.Sprintf("%d is not a failure reason", int32(f.GetReason())))
	}
	if s := f.GetHttpStatus(); s != 0 && (s < 100 || s > 999) {
		v.add("event.failed.http_status", fmt.Sprintf("must be 0 or 100 to 999, got %d", s))
	}
	v.duration("event.failed.retry_after", f.GetRetryAfter())
	v.text("event.failed.message", f.GetMessage(), MaxEventMessageBytes)
	v.optionalURL("event.failed.url", f.GetUrl())
}

// resolved validates event.resolved.
func (v *violations) resolved(r *pb.ResolveResult) {
	c := r.GetCandidateUrls()
	if len(c) > MaxResolveCandidates {
		v.add("event.resolved.candidate_urls", fmt.Sprintf("%d URLs exceed the limit of %d", len(c), MaxResolveCandidates))
	} else {
		for i, u := range c {
			v.url(index("event.resolved.candidate_urls", i), u)
		}
	}
	v.text("event.resolved.note", r.GetNote(), MaxResolveNoteBytes)
	v.optionalURL("event.resolved.final_url", r.GetFinalUrl())
	v.optionalURL("event.resolved.forward_url", r.GetForwardUrl())
}

// ContentKey is the blob key of content with the given lower-case hex SHA-256:
// "sha256/<first two hex digits>/<sha256>.pdf" (the blob store's layout, see
// internal/blobstore).
func ContentKey(sha string) string {
	return "sha256/" + sha[:2] + "/" + sha + ".pdf"
}

// isContentKey reports whether key is ContentKey(sha), without building it.
func isContentKey(key, sha string) bool {
	const prefix, suffix = "sha256/", ".pdf"
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || len(rest) != 3+len(sha)+len(suffix) {
		return false
	}
	return rest[:2] == sha[:2] && rest[2] == '/' && rest[3:3+len(sha)] == sha && strings.HasSuffix(rest, suffix)
}

func (v *violations) fetcherID(path, id string) {
	switch {
	case id == "":
		v.add(path, "is required")
	case len(id) > MaxFetcherIDBytes:
		v.add(path, fmt.Sprintf("%d bytes exceed the limit of %d", len(id), MaxFetcherIDBytes))
	case !utf8.ValidString(id):
		v.add(path, "is not valid UTF-8")
	default:
		for i, r := range id {
			if unicode.IsSpace(r) || !unicode.IsPrint(r) {
				v.add(path, fmt.Sprintf("contains %U at byte %d: white space and control characters are not allowed", r, i))
				return
			}
		}
	}
}

func (v *violations) leaseID(path, id string) {
	switch {
	case id == "":
		v.add(path, "is required")
	case len(id) > MaxLeaseIDBytes:
		v.add(path, fmt.Sprintf("%d bytes exceed the limit of %d", len(id), MaxLeaseIDBytes))
	}
}

func (v *violations) attempt(path string, n int32) {
	if n < 1 || n > MaxAttempt {
		v.add(path, fmt.Sprintf("must be 1 to %d, got %d", MaxAttempt, n))
	}
}

func (v *violations) optionalPaperID(path, id string) {
	if id != "" {
		v.paperID(path, id)
	}
}

func (v *violations) optionalURL(path, u string) {
	if u != "" {
		v.url(path, u)
	}
}

func (v *violations) duration(path string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		v.add(path, err.Error())
	} else if d.AsDuration() < 0 {
		v.add(path, "must not be negative")
	}
}

func (v *violations) timestamp(path string, t *timestamppb.Timestamp) {
	if t == nil {
		return
	}
	if err := t.CheckValid(); err != nil {
		v.add(path, err.Error())
	}
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
