package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"time"

	"gocloud.dev/gcerrors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Limits of this implementation; the contract's limits are internal/validate's constants.
const (
	maxChunkIndex = 1 << 30
	readChunkSize = 1 << 20
)

// api implements CoordinatorService on top of the loop.
type api struct {
	pb.UnimplementedCoordinatorServiceServer
	c *Coordinator
}

// toStatus maps an engine error to a gRPC status.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, errPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
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

// postWait hands m to the loop, waiting for room (used by stream receivers: gRPC flow control
// then slows the fetcher down).
func (c *Coordinator) postWait(ctx context.Context, m message) error {
	select {
	case c.inbox <- m:
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

// preparePapers validates the semantics of a chunk of papers and pre-computes, off the loop,
// what the loop needs: the encoded specs, id hashes and the chunk's digest. The full syntax
// check is internal/validate's, run by the server's interceptor; the cheap checks here (with
// validate's limits) only guard the invariants the engine and the store rely on, for servers
// built without that interceptor.
func preparePapers(field string, specs []*pb.PaperSpec) ([]preparedPaper, [32]byte, error) {
	var sum [32]byte
	if len(specs) == 0 {
		return nil, sum, status.Errorf(codes.InvalidArgument, "%s: at least one paper is required", field)
	}
	if len(specs) > validate.MaxPapersPerMessage {
		return nil, sum, status.Errorf(codes.InvalidArgument, "%s: at most %d papers per message, got %d", field, validate.MaxPapersPerMessage, len(specs))
	}
	out := make([]preparedPaper, len(specs))
	seen := make(map[string]int, len(specs))
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var lenBuf [binary.MaxVarintLen64]byte
	for i, s := range specs {
		id := s.GetPaperId()
		if id == "" || len(id) > validate.MaxPaperIDBytes || strings.IndexByte(id, 0) >= 0 {
			return nil, sum, status.Errorf(codes.InvalidArgument, "%s[%d].paper_id: must be 1 to %d bytes without NUL", field, i, validate.MaxPaperIDBytes)
		}
		if j, dup := seen[id]; dup {
			return nil, sum, status.Errorf(codes.InvalidArgument, "%s[%d].paper_id: %q repeats %s[%d]", field, i, id, field, j)
		}
		seen[id] = i
		if n := len(s.GetUrls()); n == 0 || n > validate.MaxURLsPerPaper {
			return nil, sum, status.Errorf(codes.InvalidArgument, "%s[%d].urls: 1 to %d URLs required, got %d", field, i, validate.MaxURLsPerPaper, n)
		}
		for j, u := range s.GetUrls() {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				return nil, sum, status.Errorf(codes.InvalidArgument, "%s[%d].urls[%d]: must be an http or https URL", field, i, j)
			}
		}
		raw, err := opts.Marshal(s)
		if err != nil {
			return nil, sum, status.Errorf(codes.InvalidArgument, "%s[%d]: %v", field, i, err)
		}
		h.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(raw)))])
		h.Write(raw)
		out[i] = preparedPaper{id: id, idHash: hashString(id), spec: raw, urls: s.GetUrls(),
			host: hostKey(s.GetUrls()[0]), expected: s.GetExpectedSha256()}
	}
	copy(sum[:], h.Sum(nil))
	return out, sum, nil
}

// SubmitBatch creates and seals a batch in one call (idempotent by batch_id).
func (a *api) SubmitBatch(ctx context.Context, req *pb.SubmitBatchRequest) (*pb.SubmitBatchResponse, error) {
	papers, sum, err := preparePapers("papers", req.GetPapers())
	if err != nil {
		return nil, err
	}
	r := &submitReq{op: opSubmit, batchID: req.GetBatchId(), labels: req.GetLabels(), papers: papers, hash: sum, reply: make(chan submitResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	return &pb.SubmitBatchResponse{BatchId: res.batch.GetBatchId(), Created: res.created, Batch: res.batch}, nil
}

// CreateBatch opens a chunked batch (idempotent by batch_id).
func (a *api) CreateBatch(ctx context.Context, req *pb.CreateBatchRequest) (*pb.CreateBatchResponse, error) {
	r := &submitReq{op: opCreate, batchID: req.GetBatchId(), labels: req.GetLabels(), reply: make(chan submitResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	return &pb.CreateBatchResponse{BatchId: res.batch.GetBatchId(), Created: res.created, Batch: res.batch}, nil
}

// AppendPapers adds one chunk to an open batch (idempotent by chunk_index).
func (a *api) AppendPapers(ctx context.Context, req *pb.AppendPapersRequest) (*pb.AppendPapersResponse, error) {
	if req.GetBatchId() == "" {
		return nil, status.Error(codes.InvalidArgument, "batch_id: required")
	}
	if req.GetChunkIndex() < 0 || req.GetChunkIndex() > maxChunkIndex {
		return nil, status.Errorf(codes.InvalidArgument, "chunk_index: must be 0 to %d", maxChunkIndex)
	}
	papers, sum, err := preparePapers("papers", req.GetPapers())
	if err != nil {
		return nil, err
	}
	r := &submitReq{op: opAppend, batchID: req.GetBatchId(), papers: papers, hash: sum, chunkIndex: req.GetChunkIndex(), reply: make(chan submitResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	return &pb.AppendPapersResponse{BatchId: req.GetBatchId(), ChunkIndex: req.GetChunkIndex(), Duplicate: res.duplicate, TotalPapers: res.total}, nil
}

// SealBatch closes a chunked batch (idempotent).
func (a *api) SealBatch(ctx context.Context, req *pb.SealBatchRequest) (*pb.SealBatchResponse, error) {
	if req.GetBatchId() == "" {
		return nil, status.Error(codes.InvalidArgument, "batch_id: required")
	}
	if req.GetChunkCount() < 0 {
		return nil, status.Error(codes.InvalidArgument, "chunk_count: must not be negative")
	}
	r := &submitReq{op: opSeal, batchID: req.GetBatchId(), chunkCount: req.GetChunkCount(), reply: make(chan submitResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	return &pb.SealBatchResponse{Batch: res.batch}, nil
}

func (a *api) batchOp(ctx context.Context, id string, cancel bool, reason string) (*pb.Batch, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "batch_id: required")
	}
	r := &batchReq{id: id, cancel: cancel, reason: reason, reply: make(chan batchResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	return res.batch, nil
}

// GetBatch returns a batch.
func (a *api) GetBatch(ctx context.Context, req *pb.GetBatchRequest) (*pb.GetBatchResponse, error) {
	b, err := a.batchOp(ctx, req.GetBatchId(), false, "")
	if err != nil {
		return nil, err
	}
	return &pb.GetBatchResponse{Batch: b}, nil
}

// CancelBatch cancels a batch's unfinished papers.
func (a *api) CancelBatch(ctx context.Context, req *pb.CancelBatchRequest) (*pb.CancelBatchResponse, error) {
	b, err := a.batchOp(ctx, req.GetBatchId(), true, req.GetReason())
	if err != nil {
		return nil, err
	}
	return &pb.CancelBatchResponse{Batch: b}, nil
}

// ListBatches lists batches, newest first.
func (a *api) ListBatches(ctx context.Context, req *pb.ListBatchesRequest) (*pb.ListBatchesResponse, error) {
	size := int(req.GetPageSize())
	if size < 0 || size > 1000 {
		return nil, status.Error(codes.InvalidArgument, "page_size: must be 0 to 1000")
	}
	if size == 0 {
		size = 100
	}
	r := &listBatchesReq{size: size, token: req.GetPageToken(), reply: make(chan listBatchesResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	return &pb.ListBatchesResponse{Batches: res.batches, NextPageToken: res.next}, nil
}

// lookup resolves (batch, paper) to its stored record.
func (a *api) lookup(ctx context.Context, batchID, paperID string) (lookupResult, *paperRecord, *pb.PaperSpec, error) {
	if batchID == "" {
		return lookupResult{}, nil, nil, status.Error(codes.InvalidArgument, "batch_id: required")
	}
	if paperID == "" {
		return lookupResult{}, nil, nil, status.Error(codes.InvalidArgument, "paper_id: required")
	}
	r := &lookupReq{batchID: batchID, paperID: paperID, reply: make(chan lookupResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return res, nil, nil, err
	}
	if res.err != nil {
		return res, nil, nil, toStatus(res.err)
	}
	rec, spec, err := a.c.st.readPaper(res.idx)
	if err != nil {
		return res, nil, nil, status.Errorf(codes.Internal, "read paper: %v", err)
	}
	if spec.GetPaperId() != paperID {
		return res, nil, nil, status.Errorf(codes.NotFound, "paper %q in batch %q not found", paperID, batchID)
	}
	return res, rec, spec, nil
}

func paperProto(batchID string, rec *paperRecord, spec *pb.PaperSpec, live liveInfo) *pb.Paper {
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
	case stateDownloading:
		p.BytesDownloaded, p.BytesTotal = live.bytes, live.total
	case stateRetryWait:
		p.NextAttemptAt = timestamppb.New(unixTime(rec.aux))
	}
	if terminal(rec.state) {
		p.FinishedAt = timestamppb.New(unixTime(rec.aux))
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
		return nil, status.Error(codes.InvalidArgument, "batch_id: required")
	}
	size := int(req.GetPageSize())
	if size < 0 || size > 5000 {
		return nil, status.Error(codes.InvalidArgument, "page_size: must be 0 to 5000")
	}
	if size == 0 {
		size = 500
	}
	var mask uint8
	for i, s := range req.GetStates() {
		if s <= pb.PaperState_PAPER_STATE_UNSPECIFIED || s > pb.PaperState_PAPER_STATE_CANCELLED {
			return nil, status.Errorf(codes.InvalidArgument, "states[%d]: unknown state %d", i, s)
		}
		mask |= 1 << uint8(s)
	}
	r := &listPapersReq{batchID: req.GetBatchId(), states: mask, size: size, token: req.GetPageToken(), reply: make(chan listPapersResult, 1)}
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	recs, specs, err := a.c.st.readPapers(res.idxs)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read papers: %v", err)
	}
	out := &pb.ListPapersResponse{Papers: make([]*pb.Paper, len(recs)), NextPageToken: res.next}
	for i := range recs {
		out.Papers[i] = paperProto(res.batchID, &recs[i], specs[i], res.live[res.idxs[i]])
	}
	return out, nil
}

// WatchBatch streams a snapshot, then coalesced updates until the batch is terminal.
func (a *api) WatchBatch(req *pb.WatchBatchRequest, stream pb.CoordinatorService_WatchBatchServer) error {
	if req.GetBatchId() == "" {
		return status.Error(codes.InvalidArgument, "batch_id: required")
	}
	ctx := stream.Context()
	w := newWatcher(0, req.GetIncludePapers())
	defer w.gone.Store(true)
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
			return status.Error(codes.ResourceExhausted, "watcher fell too far behind; reconnect")
		}
		msg := &pb.WatchBatchResponse{Snapshot: u.snapshot, Batch: u.batch, Active: u.active, Hosts: u.hosts, HostsOmitted: u.omitted}
		if u.npapers > 0 {
			ups, err := a.paperUpdates(u.changed())
			if err != nil {
				return status.Errorf(codes.Internal, "read paper updates: %v", err)
			}
			msg.PaperUpdates = ups
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		if u.final {
			return nil
		}
	}
}

func (a *api) paperUpdates(idxs []uint32) ([]*pb.PaperUpdate, error) {
	recs, specs, err := a.c.st.readPapers(idxs)
	if err != nil {
		return nil, err
	}
	out := make([]*pb.PaperUpdate, len(recs))
	for i := range recs {
		r := &recs[i]
		out[i] = &pb.PaperUpdate{
			PaperId: specs[i].GetPaperId(), State: pb.PaperState(r.state), Attempts: int32(r.attempts),
			LastError: r.lastError, LastFailureReason: pb.FailureReason(r.reason), Cached: r.flags&flagCached != 0,
		}
		if r.state == stateSucceeded {
			out[i].Size, out[i].Sha256, out[i].BlobKey = r.size, r.sha256, r.blobKey
		}
	}
	return out, nil
}

// ReadPaper streams a stored PDF in chunks of at most 1 MiB.
func (a *api) ReadPaper(req *pb.ReadPaperRequest, stream pb.CoordinatorService_ReadPaperServer) error {
	ctx := stream.Context()
	_, rec, _, err := a.lookup(ctx, req.GetBatchId(), req.GetPaperId())
	if err != nil {
		return err
	}
	if rec.state != stateSucceeded || rec.blobKey == "" {
		return status.Errorf(codes.FailedPrecondition, "paper %q is %s, not SUCCEEDED", req.GetPaperId(), pb.PaperState(rec.state))
	}
	if a.c.cfg.Bucket == nil {
		return status.Error(codes.FailedPrecondition, "this coordinator has no blob store configured")
	}
	off := req.GetOffset()
	if off < 0 || off > rec.size {
		return status.Errorf(codes.OutOfRange, "offset %d is outside the file (size %d)", off, rec.size)
	}
	rd, err := a.c.cfg.Bucket.NewRangeReader(ctx, rec.blobKey, off, -1, nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return status.Errorf(codes.DataLoss, "stored blob of paper %q is missing", req.GetPaperId())
		}
		return status.Errorf(codes.Unavailable, "open blob: %v", err)
	}
	defer func() { _ = rd.Close() }()
	sent := false
	for {
		// A fresh buffer per message: gRPC may still reference a sent message.
		buf := make([]byte, min(readChunkSize, max(rec.size-off, 0)))
		n, rerr := io.ReadFull(rd, buf)
		if n > 0 || !sent {
			if err := stream.Send(&pb.ReadPaperResponse{Offset: off, Data: buf[:n], Size: rec.size, Sha256: rec.sha256}); err != nil {
				return err
			}
			sent = true
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF || off >= rec.size {
			return nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Unavailable, "read blob: %v", rerr)
		}
	}
}

func unixTime(ns int64) time.Time { return time.Unix(0, ns) }
