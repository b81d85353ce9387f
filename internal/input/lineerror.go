package input

import "fmt"

// LineError is a malformed entry: the caller reports it and goes on reading (or stops, in
// strict mode).
type LineError struct {
	// File is the input's name ("-" for standard input).
	File string
	// Line is the line number, starting at 1.
	Line int
	// Err says what is wrong.
	Err error
}

// Error formats the error as "FILE:LINE: message", like a compiler.
func (e *LineError) Error() string {
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

// Unwrap returns the underlying error.
func (e *LineError) Unwrap() error { return e.Err }
