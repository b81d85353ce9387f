package coordinator

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Store reads during an iteration: one read transaction, shared by every read of the
// iteration and ended before the commit.

func (e *engine) readTx() (*bolt.Tx, error) {
	if e.rtx == nil {
		tx, err := e.st.db.Begin(false)
		if err != nil {
			return nil, fmt.Errorf("begin read: %w", err)
		}
		e.rtx = tx
	}
	return e.rtx, nil
}

func (e *engine) endReads() {
	if e.rtx != nil {
		_ = e.rtx.Rollback()
		e.rtx = nil
	}
}

// specOf returns a paper's spec (pending or committed).
func (e *engine) specOf(idx uint32) (*pb.PaperSpec, error) {
	raw, ok := e.pendingSpecs[idx]
	if !ok {
		tx, err := e.readTx()
		if err != nil {
			return nil, err
		}
		raw = tx.Bucket([]byte(bucketSpecs)).Get(key32(idx))
		if raw == nil {
			return nil, fmt.Errorf("%w: spec of paper %d missing", errInternal, idx)
		}
	}
	spec := &pb.PaperSpec{}
	if err := proto.Unmarshal(raw, spec); err != nil {
		return nil, fmt.Errorf("%w: spec of paper %d: %w", errInternal, idx, err)
	}
	return spec, nil
}

// committedRecord returns a paper's committed record.
func (e *engine) committedRecord(idx uint32) (*storedPaper, *pb.PaperSpec, error) {
	tx, err := e.readTx()
	if err != nil {
		return nil, nil, err
	}
	var rec storedPaper
	spec := &pb.PaperSpec{}
	if err := readPaperTx(tx, idx, &rec, spec); err != nil {
		return nil, nil, err
	}
	return &rec, spec, nil
}
