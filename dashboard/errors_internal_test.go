package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestErrorHeaders: an HTTP error tells a client what the gRPC status's details say in HTTP's
// own terms: 401 names the Bearer scheme (WWW-Authenticate), 429 and 503 with a RetryInfo say
// when to come back (Retry-After, whole seconds rounded up).
func TestErrorHeaders(t *testing.T) {
	withRetry := func(c codes.Code, d time.Duration) error {
		st, err := status.New(c, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	for _, c := range []struct {
		err                error
		status             int
		wwwAuth, retryAfer string
	}{
		{status.Error(codes.Unauthenticated, "a bearer token is required"), http.StatusUnauthorized, `Bearer realm="paperfetch"`, ""},
		{withRetry(codes.ResourceExhausted, 1500*time.Millisecond), http.StatusTooManyRequests, "", "2"},
		{withRetry(codes.Unavailable, 10*time.Second), http.StatusServiceUnavailable, "", "10"},
		{status.Error(codes.ResourceExhausted, "too many watchers"), http.StatusTooManyRequests, "", ""},
		{status.Error(codes.NotFound, "no such batch"), http.StatusNotFound, "", ""},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/v1/batches", nil)
		writeHTTPError(context.Background(), runtime.NewServeMux(), jsonMarshaler(), w, r, c.err)
		if w.Code != c.status || w.Header().Get("WWW-Authenticate") != c.wwwAuth || w.Header().Get("Retry-After") != c.retryAfer {
			t.Errorf("%v: %d, WWW-Authenticate %q, Retry-After %q; want %d %q %q", c.err, w.Code,
				w.Header().Get("WWW-Authenticate"), w.Header().Get("Retry-After"), c.status, c.wwwAuth, c.retryAfer)
		}
	}
}
