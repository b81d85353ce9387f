// Package fielderr collects the invalid fields of a configuration into one error that names
// each field (and the flag that sets it), for the Validate methods of the coordinator, the
// fetcher and the embedded system. It imports no product package.
package fielderr

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// List collects field errors; its zero value is ready to use.
type List struct {
	errs []error
}

// Add records that field (set by the flag --flagName, when not empty) is invalid: format
// and args say why.
func (l *List) Add(field, flagName, format string, args ...any) {
	l.errs = append(l.errs, &FieldError{Field: field, Flag: flagName, Msg: fmt.Sprintf(format, args...)})
}

// FieldError is one invalid field.
type FieldError struct {
	// Field names the field ("Config.MaxAttempts").
	Field string
	// Flag is the command-line flag that sets it, without dashes ("" when none does).
	Flag string
	// Msg says what is wrong ("must be from 1 to 1000, got 0").
	Msg string
}

// Error is "Field (--flag) Msg".
func (e *FieldError) Error() string {
	if e.Flag != "" {
		return e.Field + " (--" + e.Flag + ") " + e.Msg
	}
	return e.Field + " " + e.Msg
}

// FlagMessage is the error as a command line's user reads it: "--flag Msg" when a flag sets
// the field, else Error().
func FlagMessage(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Flag != "" {
		return "--" + fe.Flag + " " + fe.Msg
	}
	return err.Error()
}

// Join adds errors found elsewhere (a nested configuration's).
func (l *List) Join(errs ...error) {
	for _, err := range errs {
		if err != nil {
			l.errs = append(l.errs, err)
		}
	}
}

// Positive checks that d > 0.
func (l *List) Positive(field, flagName string, d time.Duration) {
	if d <= 0 {
		l.Add(field, flagName, "must be positive, got %v", d)
	}
}

// NonNegative checks that d >= 0.
func (l *List) NonNegative(field, flagName string, d time.Duration) {
	if d < 0 {
		l.Add(field, flagName, "must not be negative, got %v", d)
	}
}

// AtLeast checks that n >= lo.
func (l *List) AtLeast(field, flagName string, n, lo int64) {
	if n < lo {
		l.Add(field, flagName, "must be at least %d, got %d", lo, n)
	}
}

// Range checks that lo <= n <= hi.
func (l *List) Range(field, flagName string, n, lo, hi int64) {
	if n < lo || n > hi {
		l.Add(field, flagName, "must be from %d to %d, got %d", lo, hi, n)
	}
}

// Err returns nil without errors, else an *Error titled what (e.g. "coordinator: invalid
// configuration").
func (l *List) Err(what string) error {
	if len(l.errs) == 0 {
		return nil
	}
	return &Error{What: what, Errs: l.errs}
}

// Error is an invalid configuration: one error per invalid field.
type Error struct {
	// What says what is invalid.
	What string
	// Errs are the errors, one per field.
	Errs []error
}

// Error is What, then the field errors separated by semicolons.
func (e *Error) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return e.What + ": " + strings.Join(msgs, "; ")
}

// Unwrap returns the field errors.
func (e *Error) Unwrap() []error { return e.Errs }
