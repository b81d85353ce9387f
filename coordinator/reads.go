package coordinator

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Reads during an iteration: what this iteration wrote and has not committed yet (read your
// writes), else the committed state through the engine's storage (storage.go).

// specOf returns a paper's spec (pending or committed).
func (e *engine) specOf(idx uint32) (*pb.PaperSpec, error) {
	raw, ok := e.pendingSpecs[idx]
	if !ok {
		var err error
		if raw, err = e.stored.spec(idx); err != nil {
			return nil, err
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
	var rec storedPaper
	spec := &pb.PaperSpec{}
	if err := e.stored.paper(idx, &rec, spec); err != nil {
		return nil, nil, err
	}
	return &rec, spec, nil
}
