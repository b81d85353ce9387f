package validate

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Violation is one thing wrong with a request: the path of the field and what is wrong.
type Violation struct {
	// Field is the field path, e.g. "papers[3].urls[0]".
	Field string
	// Description says what is wrong, e.g. `scheme "ftp" is not http or https`.
	Description string
}

// String returns "field: description".
func (v Violation) String() string { return v.Field + ": " + v.Description }

// Error is an invalid request. It converts to an INVALID_ARGUMENT status (GRPCStatus) whose
// message names the first violation and which carries a google.rpc.BadRequest detail with all
// of them.
type Error struct {
	// Violations lists what is wrong, in field order (at most 20).
	Violations []Violation
	// More counts further violations that were not recorded.
	More int
}

// Error returns the first violation, and how many more there are.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Violations[0].String())
	if n := len(e.Violations) - 1 + e.More; n > 0 {
		fmt.Fprintf(&b, " (and %d more)", n)
	}
	return b.String()
}

// GRPCStatus returns the INVALID_ARGUMENT status of the error, with a BadRequest detail.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(codes.InvalidArgument, e.Error())
	br := &errdetails.BadRequest{}
	for _, v := range e.Violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
	}
	if withDetails, err := st.WithDetails(br); err == nil {
		return withDetails
	}
	return st
}
