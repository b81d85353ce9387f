// Package dashboard is the coordinator's HTTP face: the CoordinatorService as JSON over HTTP
// under /v1/ (grpc-gateway v2, routes in proto/paperfetch/v1/coordinator_service_http.yaml), a
// live web dashboard at / (static assets embedded in the binary), its server-sent event stream
// at /ui/events and PDF downloads at /ui/download.
//
// Every data route calls the coordinator through a gRPC client connection, normally the
// server's in-process connection (grpcserver.Server.Local), so authentication, validation,
// rate limiting and metrics are exactly those of gRPC: the Authorization header of the HTTP
// request is forwarded as the call's bearer token, and the HTTP client's address as the client
// the call acts for (grpcserver.ForwardedClientKey), so per-client limits count each HTTP
// client apart. The static page holds no data; it asks for
// a token once, keeps it in the tab's sessionStorage and sends it as Authorization.
//
// Browsers' cross-site requests that change state are refused (net/http's
// CrossOriginProtection: Sec-Fetch-Site and Origin are checked on POST); the page is served with
// a Content-Security-Policy that allows only its own scripts, and it renders every value as
// text, never as HTML.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
)

// Limits of the HTTP face.
const (
	// MaxBodyBytes bounds a request body. A SubmitBatch of 5,000 papers is at most 16 MiB
	// of protobuf; its JSON is larger.
	MaxBodyBytes = 48 << 20
	// CallTimeout is the deadline of a unary call made for an HTTP request.
	CallTimeout = 30 * time.Second
	// StreamTimeout bounds one event stream or download; the page reconnects after it.
	StreamTimeout = 30 * time.Minute
	// DefaultOverviewInterval is how often the overview stream reads the batches, hosts and
	// fetchers (it sends only what changed).
	DefaultOverviewInterval = time.Second
)

//go:embed assets
var assets embed.FS

// Config configures the dashboard handler.
type Config struct {
	// Conn is a connection to the coordinator's gRPC server. Required.
	Conn grpc.ClientConnInterface
	// Logger receives errors; nil discards them.
	Logger *slog.Logger
	// OverviewInterval is how often the overview stream re-reads the batches, hosts and
	// fetchers (default DefaultOverviewInterval).
	OverviewInterval time.Duration
	// Clock makes the overview's ticker; nil means clock.Real{}.
	Clock clock.Clock
}

// handler is the dashboard's http.Handler.
type handler struct {
	cfg    Config
	client pb.CoordinatorServiceClient
	log    *slog.Logger
	gw     *runtime.ServeMux
	feeds  overviewFeeds
}

// New returns the handler of /, /v1/ and /ui/. ctx bounds nothing but the gateway's
// registration.
func New(ctx context.Context, cfg Config) (http.Handler, error) {
	if cfg.Conn == nil {
		return nil, errors.New("dashboard: Config.Conn is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OverviewInterval <= 0 {
		cfg.OverviewInterval = DefaultOverviewInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	h := &handler{cfg: cfg, client: pb.NewCoordinatorServiceClient(cfg.Conn), log: cfg.Logger,
		feeds: overviewFeeds{feeds: make(map[string]*overviewFeed), clients: make(map[string]int)}}

	gw := runtime.NewServeMux(
		runtime.WithErrorHandler(writeHTTPError),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: jsonMarshaler()}),
		// The coordinator counts each HTTP client as itself (its rate limit and watchers),
		// never as a client address the request claims.
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			return metadata.Pairs(grpcserver.ForwardedClientKey, r.RemoteAddr)
		}),
		runtime.WithIncomingHeaderMatcher(func(key string) (string, bool) {
			k, ok := runtime.DefaultHeaderMatcher(key)
			if ok && strings.EqualFold(k, grpcserver.ForwardedClientKey) {
				return "", false
			}
			return k, ok
		}),
		// Paper ids may hold "/" (DOIs): they travel percent-encoded and are decoded whole.
		runtime.WithUnescapingMode(runtime.UnescapingModeAllCharacters),
	)
	h.gw = gw
	if err := pb.RegisterCoordinatorServiceHandlerClient(ctx, gw, h.client); err != nil {
		return nil, fmt.Errorf("dashboard: register gateway: %w", err)
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", withDeadline(gw))
	mux.HandleFunc("GET /ui/events", h.events)
	mux.HandleFunc("GET /ui/download", h.download)
	files := http.FileServerFS(static)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		files.ServeHTTP(w, r)
	})

	csrf := http.NewCrossOriginProtection()
	return securityHeaders(limitBody(csrf.Handler(mux))), nil
}

// jsonMarshaler is the proto3 JSON mapping with every field present, rejecting unknown fields.
func jsonMarshaler() *runtime.JSONPb {
	return &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{},
	}
}

// withDeadline gives unary gateway calls a deadline; streams (watch, content) get the longer
// StreamTimeout.
func withDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := CallTimeout
		if strings.HasSuffix(r.URL.Path, ":watch") || strings.Contains(r.URL.Path, "/content/") {
			d = StreamTimeout
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// limitBody bounds request bodies.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// securityHeaders sets the headers that keep the page's data from being run or framed.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(r.URL.Path, "/v1/") && !strings.HasPrefix(r.URL.Path, "/ui/") {
			hd.Set("Cache-Control", "no-cache")
		}
		next.ServeHTTP(w, r)
	})
}

// outgoing carries the request's Authorization header and the client's address to the gRPC
// call.
func outgoing(ctx context.Context, r *http.Request) context.Context {
	ctx = metadata.AppendToOutgoingContext(ctx, grpcserver.ForwardedClientKey, r.RemoteAddr)
	if a := r.Header.Get("Authorization"); a != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
	}
	return ctx
}

// writeError answers with the gateway's JSON error body and HTTP status for a gRPC error.
func (h *handler) writeError(ctx context.Context, w http.ResponseWriter, r *http.Request, err error) {
	writeHTTPError(ctx, h.gw, jsonMarshaler(), w, r, err)
}

// writeHTTPError is the gateway's error answer (the status's JSON, its HTTP status) with what
// the status's details mean in HTTP headers: UNAUTHENTICATED names the Bearer scheme
// (WWW-Authenticate), a google.rpc.RetryInfo says when to come back (Retry-After, in whole
// seconds rounded up).
func writeHTTPError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st, _ := status.FromError(err)
	fix := &errorHeaders{ResponseWriter: w}
	if st.Code() == codes.Unauthenticated {
		// The gateway puts the status message there; RFC 6750 wants the scheme.
		fix.set = append(fix.set, [2]string{"WWW-Authenticate", `Bearer realm="paperfetch"`})
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().IsValid() {
			secs := int64(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))
			fix.set = append(fix.set, [2]string{"Retry-After", strconv.FormatInt(max(secs, 1), 10)})
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, fix, r, err)
}

// errorHeaders sets headers just before the status line is written (after the gateway's).
type errorHeaders struct {
	http.ResponseWriter
	set [][2]string
}

func (e *errorHeaders) WriteHeader(code int) {
	for _, kv := range e.set {
		e.Header().Set(kv[0], kv[1])
	}
	e.ResponseWriter.WriteHeader(code)
}
