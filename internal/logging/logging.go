// Package logging builds the one *slog.Logger of a paperfetch command from its --log-level
// flag. The logger is created in main and passed down; nothing here is global.
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Flags holds the logging flags of a command.
type Flags struct {
	level string
}

// RegisterFlags registers --log-level on fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.level, "log-level", "info", "log `level`: debug, info, warn or error")
	return f
}

// NewJSONLogger returns a logger writing JSON lines to w at the level of --log-level.
func (f *Flags) NewJSONLogger(w io.Writer) (*slog.Logger, error) {
	level, err := ParseLevel(f.level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// ParseLevel parses a level name: debug, info, warn or error (case-insensitive, with an
// optional offset such as "info+2", as slog.Level accepts).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}
