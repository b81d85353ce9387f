package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/paperfetch/paperfetch/internal/validate"
)

// Resource types named in ResourceInfo details, and precondition types named in
// PreconditionFailure details (documented in the proto's error section).
const (
	resourceBatch = "paperfetch.v1.Batch"
	resourcePaper = "paperfetch.v1.Paper"

	preconditionBatchState = "BATCH_STATE"
	preconditionChunks     = "CHUNKS"
	preconditionPaperState = "PAPER_STATE"
	preconditionLimit      = "LIMIT"
)

// apiError is an engine error a client can act on: its kind (errInvalid, errNotFound,
// errExists, errPrecondition) picks the code, the other fields the status detail. Its message
// names the problem without repeating the code.
type apiError struct {
	kind error
	msg  string
	// field is the request field at fault (INVALID_ARGUMENT: BadRequest).
	field string
	// resourceType and resource name the batch or paper (NOT_FOUND, ALREADY_EXISTS:
	// ResourceInfo).
	resourceType, resource string
	// precondition and subject describe the failed precondition (PreconditionFailure).
	precondition, subject string
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.kind }

// invalidField is INVALID_ARGUMENT for one field.
func invalidField(field, format string, args ...any) error {
	return &apiError{kind: errInvalid, field: field, msg: field + ": " + fmt.Sprintf(format, args...)}
}

// batchNotFound is NOT_FOUND for a batch.
func batchNotFound(id string) error {
	return &apiError{kind: errNotFound, resourceType: resourceBatch, resource: id, msg: fmt.Sprintf("batch %q does not exist", id)}
}

// paperNotFound is NOT_FOUND for a paper of a batch.
func paperNotFound(batchID, paperID string) error {
	return &apiError{kind: errNotFound, resourceType: resourcePaper, resource: batchID + "/" + paperID,
		msg: fmt.Sprintf("paper %q does not exist in batch %q", paperID, batchID)}
}

// batchExists is ALREADY_EXISTS for a batch (or one of its chunks).
func batchExists(id, format string, args ...any) error {
	return &apiError{kind: errExists, resourceType: resourceBatch, resource: id, msg: fmt.Sprintf(format, args...)}
}

// precondition is FAILED_PRECONDITION of type typ about subject.
func precondition(typ, subject, format string, args ...any) error {
	return &apiError{kind: errPrecondition, precondition: typ, subject: subject, msg: fmt.Sprintf(format, args...)}
}

// toStatus maps an engine error to a gRPC status with the details of the proto's error
// section. Statuses pass through unchanged.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status()
	}
	for _, k := range []struct {
		sentinel error
		code     codes.Code
	}{{errInvalid, codes.InvalidArgument}, {errNotFound, codes.NotFound}, {errExists, codes.AlreadyExists}, {errPrecondition, codes.FailedPrecondition}} {
		if errors.Is(err, k.sentinel) {
			// "<sentinel>: message": keep the message, the code says the rest.
			return status.Error(k.code, strings.TrimPrefix(err.Error(), k.sentinel.Error()+": "))
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

func (e *apiError) status() error {
	var code codes.Code
	var detail protoadapt.MessageV1
	switch e.kind {
	case errInvalid:
		return validate.Field(e.field, strings.TrimPrefix(e.msg, e.field+": "))
	case errNotFound:
		code = codes.NotFound
		detail = &errdetails.ResourceInfo{ResourceType: e.resourceType, ResourceName: e.resource, Description: e.msg}
	case errExists:
		code = codes.AlreadyExists
		detail = &errdetails.ResourceInfo{ResourceType: e.resourceType, ResourceName: e.resource, Description: e.msg}
	case errPrecondition:
		code = codes.FailedPrecondition
		detail = &errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
			Type: e.precondition, Subject: e.subject, Description: e.msg}}}
	default:
		return status.Error(codes.Internal, e.msg)
	}
	st := status.New(code, e.msg)
	if d, err := st.WithDetails(detail); err == nil {
		return d.Err()
	}
	return st.Err()
}
