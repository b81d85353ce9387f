package fetcher

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/storagefull"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// failure is a classified failed attempt; it becomes a DownloadFailed event.
type failure struct {
	class      pb.FailureClass
	reason     pb.FailureReason
	status     int
	retryAfter time.Duration // > 0 when the origin asked for a delay
	msg        string
	url        string
	// resumable: the partial body may be kept for a Range resume.
	resumable bool
}

func (f *failure) Error() string {
	return fmt.Sprintf("%s/%s: %s", f.class, f.reason, f.msg)
}

func (f *failure) proto() *pb.DownloadFailed {
	d := &pb.DownloadFailed{Class: f.class, Reason: f.reason, HttpStatus: reportStatus(f.status),
		Message: reportText(f.msg, validate.MaxEventMessageBytes), Url: reportURL(f.url)}
	if f.retryAfter > 0 {
		d.RetryAfter = durationpb.New(f.retryAfter)
	}
	return d
}

func permanent(reason pb.FailureReason, format string, args ...any) *failure {
	return &failure{class: pb.FailureClass_FAILURE_CLASS_PERMANENT, reason: reason, msg: fmt.Sprintf(format, args...)}
}

func transient(reason pb.FailureReason, format string, args ...any) *failure {
	return &failure{class: pb.FailureClass_FAILURE_CLASS_TRANSIENT, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// Causes recorded on a download's context when the fetcher itself cancels it.
var (
	errStalled  = errors.New("no data received within the stall timeout")
	errDeadline = errors.New("download deadline exceeded")
)

// abortError is the cancellation cause of a download stopped from outside (a Cancel from the
// coordinator, a drain, shutdown).
type abortError struct{ why string }

func (e *abortError) Error() string { return "aborted: " + e.why }

// badURLError is a URL (or redirect target) that is not a credential-free http(s) URL.
type badURLError struct{ msg string }

func (e *badURLError) Error() string { return e.msg }

// redirectError is a redirect loop or too many redirects.
type redirectError struct{ msg string }

func (e *redirectError) Error() string { return e.msg }

// classifyError turns a transport or body error into a failure. ctx is the download's context,
// whose cause tells stalls, deadlines and aborts apart from network errors.
func classifyError(ctx context.Context, err error) *failure {
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		var ab *abortError
		switch {
		case errors.Is(cause, errStalled):
			return transient(pb.FailureReason_FAILURE_REASON_STALLED, "%v", errStalled)
		case errors.Is(cause, errDeadline):
			return transient(pb.FailureReason_FAILURE_REASON_TIMEOUT, "%v", errDeadline)
		case errors.As(cause, &ab):
			return transient(pb.FailureReason_FAILURE_REASON_ABORTED, "%v", ab)
		default:
			return transient(pb.FailureReason_FAILURE_REASON_ABORTED, "aborted: %v", cause)
		}
	}
	var (
		fa  *forbiddenAddrError
		bu  *badURLError
		re  *redirectError
		ne  net.Error
		dns *net.DNSError
		ce  *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &fa):
		return permanent(pb.FailureReason_FAILURE_REASON_FORBIDDEN_ADDRESS, "%v", fa)
	case errors.As(err, &bu):
		return permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "%v", bu)
	case errors.As(err, &re):
		return permanent(pb.FailureReason_FAILURE_REASON_REDIRECT_LOOP, "%v", re)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return transient(pb.FailureReason_FAILURE_REASON_TRUNCATED, "body ended early: %v", err)
	case errors.As(err, &dns) && dns.IsNotFound:
		// Transient for one quick retry; the coordinator makes a second one permanent.
		return transient(pb.FailureReason_FAILURE_REASON_NO_SUCH_HOST, "DNS: %v", dns)
	case errors.As(err, &dns):
		return transient(pb.FailureReason_FAILURE_REASON_CONNECTION, "DNS: %v", dns)
	case errors.As(err, &ce):
		return transient(pb.FailureReason_FAILURE_REASON_CONNECTION, "TLS: %v", ce)
	case errors.As(err, &ne) && ne.Timeout():
		return transient(pb.FailureReason_FAILURE_REASON_TIMEOUT, "%v", err)
	default:
		return transient(pb.FailureReason_FAILURE_REASON_CONNECTION, "%v", err)
	}
}

// storageFailure classifies an error of the spool or the blob store: out of space or quota, or
// a read-only file system, is STORAGE_FULL (every other download would fail the same way, so
// a client stops instead of retrying); anything else is a transient STORAGE failure.
func storageFailure(err error) *failure {
	if storagefull.Is(err) {
		return transient(pb.FailureReason_FAILURE_REASON_STORAGE_FULL, "%v", err)
	}
	return transient(pb.FailureReason_FAILURE_REASON_STORAGE, "%v", err)
}

// statusFailure classifies a non-success HTTP status. now is used for Retry-After dates.
func statusFailure(resp *http.Response, now time.Time) *failure {
	code := resp.StatusCode
	var f *failure
	switch {
	case code == http.StatusNotFound:
		f = permanent(pb.FailureReason_FAILURE_REASON_NOT_FOUND, "HTTP %d", code)
	case code == http.StatusGone:
		f = permanent(pb.FailureReason_FAILURE_REASON_GONE, "HTTP %d", code)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		f = permanent(pb.FailureReason_FAILURE_REASON_FORBIDDEN, "HTTP %d", code)
	case code == http.StatusTooManyRequests:
		f = transient(pb.FailureReason_FAILURE_REASON_RATE_LIMITED, "HTTP %d", code)
		f.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	case code == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		f = transient(pb.FailureReason_FAILURE_REASON_RATE_LIMITED, "HTTP %d", code)
		f.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	case code >= 500:
		f = transient(pb.FailureReason_FAILURE_REASON_SERVER_ERROR, "HTTP %d", code)
	case code == http.StatusRequestTimeout:
		f = transient(pb.FailureReason_FAILURE_REASON_TIMEOUT, "HTTP %d", code)
	default:
		f = permanent(pb.FailureReason_FAILURE_REASON_HTTP_STATUS, "HTTP %d", code)
	}
	f.status = code
	if st := http.StatusText(code); st != "" {
		f.msg += " " + st
	}
	return f
}

// parseRetryAfter parses a Retry-After value: delay-seconds or an HTTP date. It returns 0
// when absent or unparsable, and never a negative delay.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(365 * 24 * 3600)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}
