package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Limits of this implementation; the contract's limits are internal/validate's constants.
const (
	readChunkSize = 1 << 20
	// maxPageBytes bounds the entries of a ListPapers or ListBatches page, so that every
	// response fits the 4 MiB default receive limit of gRPC clients (Python, Node, grpcurl).
	maxPageBytes = 3 << 20
	// protoEntryOverhead is the tag and length prefix of a repeated message entry (at most).
	protoEntryOverhead = 6
	// listReadGroup is how many papers ListPapers reads from the store at a time.
	listReadGroup = 256
)

// Page sizes used when a list call leaves page_size 0 (documented in the .proto; the
// largest allowed are internal/validate's Max…PageSize).
const (
	defaultBatchesPageSize = 100
	defaultPapersPageSize  = 500
	defaultHostsPageSize   = 100
)

// errBatchIDRequired is the answer to a request without its batch_id.
var errBatchIDRequired = validate.Field("batch_id", "is required")

// api implements CoordinatorService on top of the loop.
type api struct {
	pb.UnimplementedCoordinatorServiceServer
	c *Coordinator
}

var (
	errOverloaded   = status.Error(codes.ResourceExhausted, "coordinator overloaded: its inbox is full; retry with backoff")
	errStopped      = status.Error(codes.Unavailable, "coordinator is not running")
	errShuttingDown = status.Error(codes.Unavailable, "coordinator is shutting down; reconnect")
)

// post hands m to the loop without waiting: a full inbox is RESOURCE_EXHAUSTED.
func (c *Coordinator) post(m message) error {
	select {
	case <-c.done:
		return errStopped
	default:
	}
	select {
	case c.inbox <- m:
		return nil
	default:
		return errOverloaded
	}
}

// postWait hands m, fetcher traffic, to the loop's gateway inbox, waiting for room (used by
// stream receivers: gRPC flow control then slows the fetcher down).
func (c *Coordinator) postWait(ctx context.Context, m message) error {
	select {
	case c.gwInbox <- m:
		return nil
	case <-c.done:
		return errStopped
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// await waits for a reply from the loop.
func await[T any](ctx context.Context, c *Coordinator, ch chan T) (T, error) {
	var zero T
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return zero, status.FromContextError(ctx.Err()).Err()
	case <-c.done:
		return zero, errStopped
	}
}

// call posts m and waits for its reply.
func call[T any](ctx context.Context, c *Coordinator, m message, ch chan T) (T, error) {
	if err := c.post(m); err != nil {
		var zero T
		return zero, err
	}
	return await(ctx, c, ch)
}

// result is the answer of the loop to a request: its error, if any, is one of the engine's
// semantic errors (toStatus maps it to a gRPC status).
type result interface {
	failure() error
}

func (r submitResult) failure() error      { return r.err }
func (r batchResult) failure() error       { return r.err }
func (r listBatchesResult) failure() error { return r.err }
func (r lookupResult) failure() error      { return r.err }
func (r listPapersResult) failure() error  { return r.err }
func (r retryResult) failure() error       { return r.err }
func (r hostsResult) failure() error       { return r.err }
func (r deleteResult) failure() error      { return r.err }

// ask posts m, waits for its reply and maps the engine's error to a gRPC status: every
// unary call of the API goes through it.
func ask[R result](ctx context.Context, c *Coordinator, m message, reply chan R) (R, error) {
	res, err := call(ctx, c, m, reply)
	if err != nil {
		return res, err
	}
	if err := res.failure(); err != nil {
		return res, toStatus(err)
	}
	return res, nil
}

// preparePapers validates the semantics of a chunk of papers and pre-computes, off the loop,
// what the loop needs: the encoded specs, id hashes and the chunk's digest. The full syntax
// check is internal/validate's, run by the server's interceptor; the cheap checks here (with
// validate's limits) only guard the invariants the engine and the store rely on, for servers
// built without that interceptor.
func preparePapers(field string, specs []*pb.PaperSpec) ([]preparedPaper, [32]byte, error) {
	var sum [32]byte
	if len(specs) == 0 {
		return nil, sum, validate.Field(field, "at least one paper is required")
	}
	if len(specs) > validate.MaxPapersPerMessage {
		return nil, sum, validate.Field(field, fmt.Sprintf("at most %d papers per message, got %d", validate.MaxPapersPerMessage, len(specs)))
	}
	out := make([]preparedPaper, len(specs))
	seen := make(map[string]int, len(specs))
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var lenBuf [binary.MaxVarintLen64]byte
	for i, s := range specs {
		id := s.GetPaperId()
		path := func() string { return fmt.Sprintf("%s[%d]", field, i) } // for errors only
		if id == "" || len(id) > validate.MaxPaperIDBytes || strings.IndexByte(id, 0) >= 0 {
			return nil, sum, validate.Field(path()+".paper_id", fmt.Sprintf("must be 1 to %d bytes without NUL", validate.MaxPaperIDBytes))
		}
		if j, dup := seen[id]; dup {
			return nil, sum, validate.Field(path()+".paper_id", fmt.Sprintf("duplicate of %s[%d].paper_id %q", field, j, validate.Truncate(id, 64)))
		}
		seen[id] = i
		var doi string
		if s.GetDoi() != "" {
			d, err := validate.NormalizeDOI(s.GetDoi())
			if err != nil {
				return nil, sum, validate.Field(path()+".doi", err.Error())
			}
			doi = d
			if n := len(s.GetUrls()); n > validate.MaxURLsWithDOI {
				return nil, sum, validate.Field(path()+".urls", fmt.Sprintf("at most %d URLs with a doi, got %d", validate.MaxURLsWithDOI, n))
			}
		} else if n := len(s.GetUrls()); n == 0 || n > validate.MaxURLsPerPaper {
			return nil, sum, validate.Field(path()+".urls", fmt.Sprintf("1 to %d URLs required, got %d", validate.MaxURLsPerPaper, n))
		}
		for j, u := range s.GetUrls() {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				return nil, sum, validate.Field(fmt.Sprintf("%s.urls[%d]", path(), j), "must be an http or https URL")
			}
		}
		raw, err := opts.Marshal(s)
		if err != nil {
			return nil, sum, validate.Field(path(), err.Error())
		}
		h.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(raw)))])
		h.Write(raw)
		out[i] = preparedPaper{id: id, idHash: hashString(id), spec: raw, urls: s.GetUrls(),
			expected: s.GetExpectedSha256(), doi: doi}
		if len(s.GetUrls()) > 0 {
			out[i].host = hostKey(s.GetUrls()[0])
		}
	}
	copy(sum[:], h.Sum(nil))
	return out, sum, nil
}

// SubmitBatch creates and seals a batch in one call (idempotent by batch_id).
func (a *api) SubmitBatch(ctx context.Context, req *pb.SubmitBatchRequest) (*pb.SubmitBatchResponse, error) {
	if err := validate.Labels("labels", req.GetLabels()); err != nil {
		return nil, err
	}
	papers, sum, err := preparePapers("papers", req.GetPapers())
	if err != nil {
		return nil, err
	}
	r := &submitReq{op: opSubmit, batchID: req.GetBatchId(), labels: req.GetLabels(), papers: papers, hash: sum, reply: make(chan submitResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.SubmitBatchResponse{BatchId: res.batch.GetBatchId(), Created: res.created, Batch: res.batch}, nil
}

// CreateBatch opens a chunked batch (idempotent by batch_id).
func (a *api) CreateBatch(ctx context.Context, req *pb.CreateBatchRequest) (*pb.CreateBatchResponse, error) {
	if err := validate.Labels("labels", req.GetLabels()); err != nil {
		return nil, err
	}
	r := &submitReq{op: opCreate, batchID: req.GetBatchId(), labels: req.GetLabels(), reply: make(chan submitResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.CreateBatchResponse{BatchId: res.batch.GetBatchId(), Created: res.created, Batch: res.batch}, nil
}

// AppendPapers adds one chunk to an open batch (idempotent by chunk_index).
func (a *api) AppendPapers(ctx context.Context, req *pb.AppendPapersRequest) (*pb.AppendPapersResponse, error) {
	if req.GetBatchId() == "" {
		return nil, errBatchIDRequired
	}
	if req.GetChunkIndex() < 0 || req.GetChunkIndex() >= validate.MaxChunks {
		return nil, validate.Field("chunk_index", fmt.Sprintf("must be 0 to %d", validate.MaxChunks-1))
	}
	papers, sum, err := preparePapers("papers", req.GetPapers())
	if err != nil {
		return nil, err
	}
	r := &submitReq{op: opAppend, batchID: req.GetBatchId(), papers: papers, hash: sum, chunkIndex: req.GetChunkIndex(), reply: make(chan submitResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.AppendPapersResponse{BatchId: req.GetBatchId(), ChunkIndex: req.GetChunkIndex(), Duplicate: res.duplicate, TotalPapers: res.total,
		ChunksAccepted: res.chunksAccepted, FirstMissingChunk: res.firstMissingChunk}, nil
}

// SealBatch closes a chunked batch (idempotent).
func (a *api) SealBatch(ctx context.Context, req *pb.SealBatchRequest) (*pb.SealBatchResponse, error) {
	if req.GetBatchId() == "" {
		return nil, errBatchIDRequired
	}
	if req.GetChunkCount() < 0 {
		return nil, validate.Field("chunk_count", "must not be negative")
	}
	r := &submitReq{op: opSeal, batchID: req.GetBatchId(), chunkCount: req.GetChunkCount(), reply: make(chan submitResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.SealBatchResponse{Batch: res.batch}, nil
}

// PollMethods returns the full method names of CoordinatorService's reads that clients poll
// (GetBatch, ListBatches, GetPaper, ListPapers): the servers log their successful calls at
// debug (grpcserver.Config.Polls).
func PollMethods() []string {
	return []string{
		pb.CoordinatorService_GetBatch_FullMethodName,
		pb.CoordinatorService_ListBatches_FullMethodName,
		pb.CoordinatorService_GetPaper_FullMethodName,
		pb.CoordinatorService_ListPapers_FullMethodName,
	}
}

// GetBatch returns a batch as last committed, from its published view (readview.go): it
// does not go through the loop, so neither the loop's work nor a commit in progress delays it.
func (a *api) GetBatch(_ context.Context, req *pb.GetBatchRequest) (*pb.GetBatchResponse, error) {
	if req.GetBatchId() == "" {
		return nil, errBatchIDRequired
	}
	select {
	case <-a.c.done:
		return nil, errStopped
	default:
	}
	v, ok := a.c.eng.pub.get(req.GetBatchId())
	if !ok {
		return nil, toStatus(batchNotFound(req.GetBatchId()))
	}
	return &pb.GetBatchResponse{Batch: v.proto()}, nil
}

// CancelBatch cancels a batch's unfinished papers.
func (a *api) CancelBatch(ctx context.Context, req *pb.CancelBatchRequest) (*pb.CancelBatchResponse, error) {
	if req.GetBatchId() == "" {
		return nil, errBatchIDRequired
	}
	reason := validate.Truncate(req.GetReason(), validate.MaxCancelReasonBytes)
	r := &cancelBatchReq{id: req.GetBatchId(), reason: reason, finishRunning: req.GetFinishRunning(), reply: make(chan batchResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.CancelBatchResponse{Batch: res.batch}, nil
}

// ListBatches lists batches, newest first.
func (a *api) ListBatches(ctx context.Context, req *pb.ListBatchesRequest) (*pb.ListBatchesResponse, error) {
	size := int(req.GetPageSize())
	if size < 0 || size > validate.MaxListBatchesPageSize {
		return nil, validate.Field("page_size", fmt.Sprintf("must be 0 to %d", validate.MaxListBatchesPageSize))
	}
	if size == 0 {
		size = defaultBatchesPageSize
	}
	r := &listBatchesReq{size: size, token: req.GetPageToken(), reply: make(chan listBatchesResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.ListBatchesResponse{Batches: res.batches, NextPageToken: res.next}, nil
}

// lookup resolves (batch, paper) to its stored record.
func (a *api) lookup(ctx context.Context, batchID, paperID string) (lookupResult, *storedPaper, *pb.PaperSpec, error) {
	if batchID == "" {
		return lookupResult{}, nil, nil, errBatchIDRequired
	}
	if paperID == "" {
		return lookupResult{}, nil, nil, validate.Field("paper_id", "is required")
	}
	r := &lookupReq{batchID: batchID, paperID: paperID, reply: make(chan lookupResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return res, nil, nil, err
	}
	rec, spec, err := a.c.st.readPaper(res.idx)
	if err != nil {
		if errors.Is(err, errRecordMissing) { // its batch was deleted meanwhile
			return res, nil, nil, toStatus(paperNotFound(batchID, paperID))
		}
		return res, nil, nil, status.Errorf(codes.Internal, "read paper: %v", err)
	}
	if spec.GetPaperId() != paperID {
		return res, nil, nil, toStatus(paperNotFound(batchID, paperID))
	}
	return res, rec, spec, nil
}

func paperProto(batchID string, rec *storedPaper, spec *pb.PaperSpec, live liveInfo) *pb.Paper {
	p := &pb.Paper{
		BatchId:           batchID,
		Spec:              spec,
		State:             pb.PaperState(rec.state),
		Attempts:          int32(rec.attempts),
		LastError:         rec.lastError,
		LastFailureReason: pb.FailureReason(rec.reason),
		CreatedAt:         timestamppb.New(unixTime(rec.createdAt)),
	}
	switch rec.state {
	case stateSucceeded:
		p.Sha256, p.Size, p.BlobKey = rec.sha256, rec.size, rec.blobKey
		p.FinalUrl, p.ContentType = rec.finalURL, rec.contentType
		p.Cached = rec.flags&flagCached != 0
		p.Source = rec.sourceName()
	case stateDownloading:
		p.BytesDownloaded, p.BytesTotal = live.bytes, live.total
	case stateRetryWait:
		p.NextAttemptAt = timestamppb.New(unixTime(rec.nextAttempt()))
	}
	if terminal(rec.state) {
		p.FinishedAt = timestamppb.New(unixTime(rec.finishedAt()))
	}
	return p
}

// GetPaper returns one paper.
func (a *api) GetPaper(ctx context.Context, req *pb.GetPaperRequest) (*pb.GetPaperResponse, error) {
	res, rec, spec, err := a.lookup(ctx, req.GetBatchId(), req.GetPaperId())
	if err != nil {
		return nil, err
	}
	return &pb.GetPaperResponse{Paper: paperProto(res.batchID, rec, spec, res.live)}, nil
}

// ListPapers lists a batch's papers in submission order.
func (a *api) ListPapers(ctx context.Context, req *pb.ListPapersRequest) (*pb.ListPapersResponse, error) {
	if req.GetBatchId() == "" {
		return nil, errBatchIDRequired
	}
	size := int(req.GetPageSize())
	if size < 0 || size > validate.MaxListPapersPageSize {
		return nil, validate.Field("page_size", fmt.Sprintf("must be 0 to %d", validate.MaxListPapersPageSize))
	}
	if size == 0 {
		size = defaultPapersPageSize
	}
	var mask uint8
	for i, s := range req.GetStates() {
		if s <= pb.PaperState_PAPER_STATE_UNSPECIFIED || s > pb.PaperState_PAPER_STATE_CANCELLED {
			return nil, validate.Field(fmt.Sprintf("states[%d]", i), fmt.Sprintf("%d is not a paper state", s))
		}
		mask |= 1 << uint8(s)
	}
	if len(req.GetReasons()) > validate.MaxReasonFilters {
		return nil, validate.Field("reasons", fmt.Sprintf("at most %d entries", validate.MaxReasonFilters))
	}
	var reasons uint64
	for i, s := range req.GetReasons() {
		if _, known := pb.FailureReason_name[int32(s)]; !known || s >= numReasons {
			return nil, validate.Field(fmt.Sprintf("reasons[%d]", i), fmt.Sprintf("unknown failure reason %d", s))
		}
		reasons |= 1 << uint8(s)
	}
	r := &listPapersReq{batchID: req.GetBatchId(), states: mask, reasons: reasons, size: size, token: req.GetPageToken(), reply: make(chan listPapersResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	// Read the papers a group at a time and cut the page by bytes (maxPageBytes), so the
	// response fits the 4 MiB default of gRPC clients whatever the papers' sizes.
	out := &pb.ListPapersResponse{NextPageToken: res.next}
	bytes := 0
	for start := 0; start < len(res.idxs); start += listReadGroup {
		group := res.idxs[start:min(start+listReadGroup, len(res.idxs))]
		recs, specs, err := a.c.st.readPapers(group)
		if err != nil {
			if errors.Is(err, errRecordMissing) { // the batch was deleted meanwhile
				return nil, toStatus(batchNotFound(req.GetBatchId()))
			}
			return nil, status.Errorf(codes.Internal, "read papers: %v", err)
		}
		for i := range recs {
			if !r.matches(recs[i].state, recs[i].reason) {
				continue // the loop picked it for a change not committed yet
			}
			p := paperProto(res.batchID, &recs[i], specs[i], res.live[group[i]])
			n := proto.Size(p) + protoEntryOverhead
			if bytes+n > maxPageBytes && len(out.Papers) > 0 {
				out.NextPageToken = strconv.FormatInt(res.pos[start+i], 10)
				return out, nil
			}
			bytes += n
			out.Papers = append(out.Papers, p)
		}
	}
	return out, nil
}

// WatchBatch streams a snapshot, then coalesced updates until the batch is settled.
func (a *api) WatchBatch(req *pb.WatchBatchRequest, stream pb.CoordinatorService_WatchBatchServer) error {
	if req.GetBatchId() == "" {
		return errBatchIDRequired
	}
	ctx := stream.Context()
	release, err := a.c.watchers.acquire(ctx, req.GetBatchId())
	if err != nil {
		return err
	}
	defer release()
	w := newWatcher(0, req.GetIncludePapers())
	defer w.gone.Store(true)
	if a.c.onWatch != nil {
		a.c.onWatch(w)
	}
	r := &watchReq{batchID: req.GetBatchId(), w: w, reply: make(chan error, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return err
	}
	if res != nil {
		return toStatus(res)
	}
	for {
		select {
		case <-w.notify:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-a.c.done:
			return errStopped
		case <-a.c.streamsClosed:
			return errShuttingDown
		}
		u := w.take()
		if u == nil {
			continue
		}
		if u.overflow {
			return status.Errorf(codes.ResourceExhausted, "watcher fell more than %d changed papers behind; reconnect", maxWatcherBacklog)
		}
		if err := a.sendUpdate(stream, w, u); err != nil {
			return err
		}
		if u.final {
			return nil
		}
	}
}

func (a *api) paperUpdates(idxs []uint32) ([]*pb.PaperUpdate, error) {
	recs, refs, err := a.c.st.readUpdates(idxs)
	if err != nil {
		return nil, err
	}
	out := make([]*pb.PaperUpdate, len(recs))
	backing := make([]pb.PaperUpdate, len(recs)) // one allocation for the updates
	for i := range recs {
		r, u := &recs[i], &backing[i]
		u.PaperId, u.State, u.Attempts = refs[i].id, pb.PaperState(r.state), int32(r.attempts)
		u.LastError, u.LastFailureReason, u.Cached = r.lastError, pb.FailureReason(r.reason), r.flags&flagCached != 0
		if r.state == stateSucceeded {
			u.Size, u.Sha256, u.BlobKey, u.Url = r.size, r.sha256, r.blobKey, r.finalURL
			u.Source = r.sourceName()
		} else {
			u.Url = refs[i].url
		}
		out[i] = u
	}
	return out, nil
}

func unixTime(ns int64) time.Time { return time.Unix(0, ns) }

// RetryFailed re-queues a batch's failed papers.
func (a *api) RetryFailed(ctx context.Context, req *pb.RetryFailedRequest) (*pb.RetryFailedResponse, error) {
	if req.GetBatchId() == "" {
		return nil, errBatchIDRequired
	}
	r := &retryReq{id: req.GetBatchId(), reply: make(chan retryResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.RetryFailedResponse{Batch: res.batch, Retried: res.retried}, nil
}

// ListHosts lists the hosts and their politeness state.
func (a *api) ListHosts(ctx context.Context, req *pb.ListHostsRequest) (*pb.ListHostsResponse, error) {
	size := int(req.GetPageSize())
	if size < 0 || size > validate.MaxListHostsPageSize {
		return nil, validate.Field("page_size", fmt.Sprintf("must be 0 to %d", validate.MaxListHostsPageSize))
	}
	if size == 0 {
		size = defaultHostsPageSize
	}
	r := &hostsReq{size: size, token: req.GetPageToken(), busyOnly: req.GetBusyOnly(), reply: make(chan hostsResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.ListHostsResponse{Hosts: res.hosts, NextPageToken: res.next}, nil
}

// ListFetchers lists the connected fetchers.
func (a *api) ListFetchers(ctx context.Context, _ *pb.ListFetchersRequest) (*pb.ListFetchersResponse, error) {
	r := &fetchersReq{reply: make(chan *pb.ListFetchersResponse, 1)}
	return call(ctx, a.c, r, r.reply)
}
