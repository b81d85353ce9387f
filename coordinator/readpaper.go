package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"

	"gocloud.dev/gcerrors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// ReadPaper streams a stored PDF in chunks of at most 1 MiB, verifying it on the way: the blob
// is read from its start (the bytes before offset are hashed, not sent) and each chunk is sent
// only once the next one has been read, so the last chunk goes out after the size and SHA-256
// have been checked. A truncated, longer or corrupted blob ends the stream with DATA_LOSS and a
// client never receives the end of a file that does not match its record.
func (a *api) ReadPaper(req *pb.ReadPaperRequest, stream pb.CoordinatorService_ReadPaperServer) error {
	ctx := stream.Context()
	_, rec, _, err := a.lookup(ctx, req.GetBatchId(), req.GetPaperId())
	if err != nil {
		return err
	}
	if rec.state != stateSucceeded || rec.blobKey == "" {
		return toStatus(precondition(preconditionPaperState, req.GetBatchId()+"/"+req.GetPaperId(), "paper %q is %s, not SUCCEEDED", req.GetPaperId(), pb.PaperState(rec.state)))
	}
	if a.c.cfg.Bucket == nil {
		return toStatus(precondition(preconditionPaperState, req.GetBatchId()+"/"+req.GetPaperId(), "this coordinator has no blob store configured"))
	}
	off := req.GetOffset()
	if off < 0 || off > rec.size {
		return status.Errorf(codes.OutOfRange, "offset %d is outside the file (size %d)", off, rec.size)
	}
	rd, err := a.c.cfg.Bucket.NewReader(ctx, rec.blobKey, nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			a.c.reportDamaged(rec.blobKey)
			return status.Errorf(codes.DataLoss, "stored blob of paper %q is missing", req.GetPaperId())
		}
		return status.Errorf(codes.Unavailable, "open blob: %v", err)
	}
	defer func() { _ = rd.Close() }()
	dataLoss := func(what string) error {
		a.c.cfg.Logger.Error("stored blob does not match its record", "batch", req.GetBatchId(), "paper", req.GetPaperId(),
			"blob", rec.blobKey, "problem", what)
		a.c.reportDamaged(rec.blobKey)
		return status.Errorf(codes.DataLoss, "stored blob of paper %q %s; the file cannot be trusted", req.GetPaperId(), what)
	}
	readErr := func(err error) error {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unavailable, "read blob: %v", err)
	}
	h := sha256.New()
	var pending *pb.ReadPaperResponse // read and hashed, sent once the next chunk is read
	for pos := int64(0); pos < rec.size; {
		// A fresh buffer per message: gRPC may still reference a sent message.
		buf := make([]byte, min(readChunkSize, rec.size-pos))
		n, rerr := io.ReadFull(rd, buf)
		h.Write(buf[:n])
		if errors.Is(rerr, io.ErrUnexpectedEOF) || errors.Is(rerr, io.EOF) {
			return dataLoss("is truncated")
		}
		if rerr != nil {
			return readErr(rerr)
		}
		end := pos + int64(n)
		if end > off {
			if pending != nil {
				if err := stream.Send(pending); err != nil {
					return err
				}
			}
			from := max(off, pos)
			pending = &pb.ReadPaperResponse{Offset: from, Data: buf[from-pos : n], Size: rec.size, Sha256: rec.sha256}
		}
		pos = end
	}
	var extra [1]byte
	if n, err := io.ReadFull(rd, extra[:]); n > 0 {
		return dataLoss("is longer than its recorded size")
	} else if err != nil && !errors.Is(err, io.EOF) {
		return readErr(err)
	}
	if !strings.EqualFold(hex.EncodeToString(h.Sum(nil)), rec.sha256) {
		return dataLoss("does not match its recorded SHA-256")
	}
	if pending == nil { // an empty file, or a read from its end
		pending = &pb.ReadPaperResponse{Offset: off, Size: rec.size, Sha256: rec.sha256}
	}
	return stream.Send(pending)
}

// reportDamaged tells the loop that a blob does not match its record (see damaged.go). It never
// blocks: when the inbox is full the report is dropped and the next read reports it again.
func (c *Coordinator) reportDamaged(key string) {
	if err := c.post(&blobDamagedMsg{key: key}); err != nil {
		c.cfg.Logger.Warn("damaged blob not reported to the loop; the next read reports it again", "blob", key, "err", err)
	}
}
