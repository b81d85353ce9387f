package coordinator

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// detail returns the first detail of type T in err's status.
func detail[T any](err error) (T, bool) {
	var zero T
	for _, d := range status.Convert(err).Details() {
		if x, ok := d.(T); ok {
			return x, true
		}
	}
	return zero, false
}

// wantBadRequest checks an INVALID_ARGUMENT naming field in its message and its BadRequest.
func wantBadRequest(t *testing.T, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
	if !strings.HasPrefix(st.Message(), field+": ") {
		t.Fatalf("message %q does not start with %q", st.Message(), field+": ")
	}
	br, ok := detail[*errdetails.BadRequest](err)
	if !ok || len(br.GetFieldViolations()) == 0 || br.GetFieldViolations()[0].GetField() != field {
		t.Fatalf("BadRequest detail = %v, want field %s", br, field)
	}
}

func noCodePrefix(t *testing.T, err error) {
	t.Helper()
	msg := status.Convert(err).Message()
	for _, p := range []string{"invalid argument", "not found", "already exists", "failed precondition"} {
		if strings.HasPrefix(msg, p) {
			t.Fatalf("message %q repeats the code", msg)
		}
	}
}

// Every error a client can act on names what is wrong in a detail (issue 13, item 5).
func TestErrorsCarryDetails(t *testing.T) {
	h := startHarness(t, nil)
	ctx := ctxT(t)

	// NOT_FOUND: ResourceInfo naming the batch, no "not found:" prefix.
	_, err := h.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetBatch unknown: %v", err)
	}
	noCodePrefix(t, err)
	if ri, ok := detail[*errdetails.ResourceInfo](err); !ok || ri.GetResourceType() != resourceBatch || ri.GetResourceName() != "nope" {
		t.Fatalf("ResourceInfo = %v", ri)
	}
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b", Papers: specs("p", 3, 1)}); err != nil {
		t.Fatal(err)
	}
	_, err = h.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "b", PaperId: "zz"})
	if ri, ok := detail[*errdetails.ResourceInfo](err); status.Code(err) != codes.NotFound || !ok || ri.GetResourceType() != resourcePaper || ri.GetResourceName() != "b/zz" {
		t.Fatalf("GetPaper unknown: %v %v", err, ri)
	}
	noCodePrefix(t, err)

	// ALREADY_EXISTS: ResourceInfo.
	_, err = h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b", Papers: specs("q", 3, 1)})
	if ri, ok := detail[*errdetails.ResourceInfo](err); status.Code(err) != codes.AlreadyExists || !ok || ri.GetResourceName() != "b" {
		t.Fatalf("resubmit with other papers: %v %v", err, ri)
	}
	noCodePrefix(t, err)

	// FAILED_PRECONDITION: PreconditionFailure; a sealed batch refuses appends.
	_, err = h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "b", ChunkIndex: 1, Papers: specs("r", 1, 1)})
	if pf, ok := detail[*errdetails.PreconditionFailure](err); status.Code(err) != codes.FailedPrecondition || !ok ||
		pf.GetViolations()[0].GetType() != preconditionBatchState || pf.GetViolations()[0].GetSubject() != "b" {
		t.Fatalf("append to sealed: %v %v", err, pf)
	}
	noCodePrefix(t, err)

	// Chunks: a client learns which chunks are in, and sealing with a gap says CHUNKS.
	if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: "c"}); err != nil {
		t.Fatal(err)
	}
	r, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "c", ChunkIndex: 0, Papers: specs("c0", 2, 1)})
	if err != nil || r.GetChunksAccepted() != 1 || r.GetFirstMissingChunk() != 1 {
		t.Fatalf("append 0: %v %v", r, err)
	}
	r, err = h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "c", ChunkIndex: 2, Papers: specs("c2", 2, 1)})
	if err != nil || r.GetChunksAccepted() != 2 || r.GetFirstMissingChunk() != 1 {
		t.Fatalf("append 2: %v %v", r, err)
	}
	g, err := h.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "c"})
	if err != nil || g.GetBatch().GetChunksAccepted() != 2 || g.GetBatch().GetFirstMissingChunk() != 1 {
		t.Fatalf("GetBatch chunks: %v %v", g, err)
	}
	_, err = h.api.SealBatch(ctx, &pb.SealBatchRequest{BatchId: "c", ChunkCount: 2})
	if pf, ok := detail[*errdetails.PreconditionFailure](err); status.Code(err) != codes.FailedPrecondition || !ok || pf.GetViolations()[0].GetType() != preconditionChunks {
		t.Fatalf("seal with a gap: %v %v", err, pf)
	}
	if r, err = h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "c", ChunkIndex: 1, Papers: specs("c1", 2, 1)}); err != nil || r.GetFirstMissingChunk() != 3 {
		t.Fatalf("append 1: %v %v", r, err)
	}
	// chunk_index is bounded.
	_, err = h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "c", ChunkIndex: 1_000_000, Papers: specs("big", 1, 1)})
	wantBadRequest(t, err, "chunk_index")

	// INVALID_ARGUMENT always names the field: a paper id already in the batch (another
	// chunk), a duplicate within the message, page tokens.
	_, err = h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "c", ChunkIndex: 3, Papers: append(specs("new", 1, 1), specs("c0", 1, 1)...)})
	wantBadRequest(t, err, "papers[1].paper_id")
	noCodePrefix(t, err)
	dup := append(specs("d", 1, 1), specs("d", 1, 1)...)
	_, err = h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{Papers: dup})
	wantBadRequest(t, err, "papers[1].paper_id")
	_, err = h.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "b", PageToken: "99999"})
	wantBadRequest(t, err, "page_token")
	_, err = h.api.ListBatches(ctx, &pb.ListBatchesRequest{PageToken: "99999"})
	wantBadRequest(t, err, "page_token")
	_, err = h.api.GetBatch(ctx, &pb.GetBatchRequest{})
	wantBadRequest(t, err, "batch_id")
	_, err = h.api.RetryFailed(ctx, &pb.RetryFailedRequest{})
	wantBadRequest(t, err, "batch_id")
	_, err = h.api.ListHosts(ctx, &pb.ListHostsRequest{PageSize: validate.MaxListHostsPageSize + 1})
	wantBadRequest(t, err, "page_size")
	_, err = h.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "b", Reasons: []pb.FailureReason{31}})
	wantBadRequest(t, err, "reasons[0]")
	_, err = h.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "b", Reasons: make([]pb.FailureReason, numReasons+1)})
	wantBadRequest(t, err, "reasons")

	// A fetcher breaking the protocol is told what it did, without the code repeated.
	ws, err := h.gw.Work(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "f", BootId: "b", Slots: 1}}}
	for range 2 {
		if err := ws.Send(hello); err != nil {
			t.Fatal(err)
		}
	}
	for err = nil; err == nil; _, err = ws.Recv() {
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("hello twice: %v", err)
	}
	noCodePrefix(t, err)
}
