// Package flagenv lets every command-line flag also be set from the environment, as
// PAPERFETCH_<FLAG> (upper case, dashes as underscores), which is how Kubernetes manifests
// configure the binaries. A flag given on the command line wins over the environment.
package flagenv

import (
	"flag"
	"fmt"
	"strings"
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
			firstErr = fmt.Errorf("environment variable %s: %w", Name(f.Name), err)
		}
	})
	return firstErr
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
