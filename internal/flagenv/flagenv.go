// Package flagenv lets every command-line flag also be set from the environment, as
// PAPERFETCH_<FLAG> (upper case, dashes as underscores), which is how Kubernetes manifests
// configure the binaries. A flag given on the command line wins over the environment.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// Prefix is prepended to every variable name.
const Prefix = "PAPERFETCH_"

// Name returns the environment variable for a flag name: "per-host-delay" becomes
// "PAPERFETCH_PER_HOST_DELAY".
func Name(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Apply sets every flag of fs that was not set on the command line and whose variable is
// present in the environment. Call it after fs.Parse. lookup is os.LookupEnv in production.
func Apply(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var firstErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || firstErr != nil {
			return
		}
		v, ok := lookup(Name(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			firstErr = fmt.Errorf("environment variable %s: invalid value %q: %w", Name(f.Name), v, Explain(f, err))
		}
	})
	return firstErr
}

// Explain replaces the flag package's bare "parse error" of a value set on f with what the
// flag wants: "not a whole number", "not a duration (write 30s, 2m, 1h)", "want true or
// false" or "not a number". Other errors are returned as they are.
func Explain(f *flag.Flag, err error) error {
	if err == nil || err.Error() != "parse error" {
		return err
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return errors.New("want true or false")
	}
	// The flag's type, not its default ("10" may be a float's): the flag package's values are
	// Getters.
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case int, int64, uint, uint64:
			return errors.New("not a whole number")
		case time.Duration:
			return errors.New("not a duration (write 30s, 2m, 1h)")
		case float64:
			return errors.New("not a number")
		}
	}
	return err
}

// SetUsage makes fs's usage (printed for -h and for a bad flag) say what the command does and
// that every flag can also come from the environment: "Usage: NAME [flags]", about, then the
// flags.
func SetUsage(fs *flag.FlagSet, about string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s [flags]\n\n", fs.Name())
		if about = strings.TrimSpace(about); about != "" {
			fmt.Fprintf(w, "%s\n\n", about)
		}
		fmt.Fprintf(w, "Flags (each can also be set as the environment variable %s<FLAG>,\ne.g. %s for --log-level; the command line wins):\n", Prefix, Name("log-level"))
		fs.PrintDefaults()
	}
}

// Exit statuses of the services' binaries.
const (
	// ExitFailed is the status of a run that failed.
	ExitFailed = 1
	// ExitUsage is the status of a bad flag or environment variable (or a configuration they
	// made invalid).
	ExitUsage = 2
)

// usageError marks an error as a usage error (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Usage marks err (when not nil) as a usage error: ExitCode returns ExitUsage for it.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// Parse parses args into fs, then applies the environment (Apply); the errors are usage
// errors (flag.ErrHelp stays recognisable with errors.Is).
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return Usage(err)
	}
	return Usage(Apply(fs, lookup))
}

// ExitCode is the exit status of a binary whose run returned err: 0 for nil and for -h
// (flag.ErrHelp), ExitUsage for usage errors, else ExitFailed.
func ExitCode(err error) int {
	var u usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &u):
		return ExitUsage
	}
	return ExitFailed
}
