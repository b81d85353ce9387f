package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/paperfetch/paperfetch/internal/flagenv"
)

// newFlagSet returns a flag set for a subcommand whose usage prints synopsis, the flags with
// double dashes, and extra text.
func (a *app) newFlagSet(name, synopsis, extra string) *flag.FlagSet {
	fs := flag.NewFlagSet("paperfetch "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every parse error too; parseFlags prints the usage itself
	// for --help only, so a mistyped flag gets one line and a hint, not the whole help.
	fs.Usage = func() {}
	a.usage = func() {
		w := a.env.Stdout
		fmt.Fprintf(w, "Usage: paperfetch %s %s\n\n", name, synopsis)
		if extra != "" {
			fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(extra))
		}
		fmt.Fprintln(w, "Flags (each also settable as PAPERFETCH_<FLAG>, e.g. PAPERFETCH_OUT):")
		printFlags(w, fs)
	}
	return fs
}

// printFlags prints the flags of fs like PrintDefaults, with double dashes.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if len(f.Name) == 1 { // a short alias: -o, -j, -q
			line = "  -" + f.Name
		}
		if name != "" {
			line += " " + strings.ToUpper(name)
		}
		if len(line) <= 30 {
			line += strings.Repeat(" ", 31-len(line))
		} else {
			line += "\n" + strings.Repeat(" ", 31)
		}
		line += usage
		if !isZeroDefault(f) {
			line += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintln(w, line)
	})
}

// isZeroDefault reports whether f's default is its type's zero value (not worth printing).
func isZeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
		return true
	}
	t := reflect.TypeOf(f.Value)
	if t.Kind() == reflect.Pointer {
		z := reflect.New(t.Elem()).Interface().(flag.Value)
		return f.DefValue == z.String()
	}
	return false
}

// parseFlags parses args, allowing flags after positional arguments (`get list.txt --out x`;
// everything after "--" is positional), then applies PAPERFETCH_<FLAG> environment variables.
// --help prints the usage and returns errHelp.
func (a *app) parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				if a.usage != nil {
					a.usage()
				}
				return nil, errHelp
			}
			msg := explainParseError(fs, err.Error())
			for _, at := range []string{"defined: -", "for flag -", "for -", "needs an argument: -"} {
				msg = longFlagName(msg, at)
			}
			if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
				if s := suggestFlag(fs, strings.TrimPrefix(name, "-")); s != "" {
					msg += fmt.Sprintf(" (did you mean --%s?)", s)
				}
			}
			return nil, usagef("%s", msg)
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if err := flagenv.Apply(fs, a.env.LookupEnv); err != nil {
		return nil, usagef("%v", err)
	}
	return positional, nil
}

// explainParseError replaces the bare "parse error" that ends the flag package's message about
// a bad value ("invalid value "x" for flag -n: parse error", "invalid boolean value "x" for
// -n: parse error") with what the flag wants (flagenv.Explain).
func explainParseError(fs *flag.FlagSet, msg string) string {
	const bare = ": parse error"
	head, ok := strings.CutSuffix(msg, bare)
	if !ok {
		return msg
	}
	i := strings.LastIndex(head, " -")
	if i < 0 {
		return msg
	}
	f := fs.Lookup(strings.TrimLeft(head[i+1:], "-"))
	if f == nil {
		return msg
	}
	return head + ": " + flagenv.Explain(f, errors.New("parse error")).Error()
}

// longFlagName writes the flag name after at in msg (the flag package's "-name") as the user
// types it: "--name", or "-x" for a one-letter flag.
func longFlagName(msg, at string) string {
	i := strings.Index(msg, at)
	if i < 0 {
		return msg
	}
	rest := msg[i+len(at):]
	name := rest
	if j := strings.IndexAny(rest, ": "); j >= 0 {
		name = rest[:j]
	}
	if len(name) <= 1 {
		return msg
	}
	return msg[:i+len(at)] + "-" + rest
}

// errHelp is returned after --help printed the usage; the command exits 0.
var errHelp = &exitError{code: ExitOK}

// sizeFlag is a byte size flag accepting units: 512MiB, 100MB, 2G, 4096.
type sizeFlag struct{ n *int64 }

// String prints the size with a binary unit when it has one.
func (s sizeFlag) String() string {
	if s.n == nil {
		return "0"
	}
	return formatSize(*s.n)
}

// Set parses a size with parseSize.
func (s sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.n = n
	return nil
}

// parseSize parses a byte size: a number with an optional unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB,
// T/TB/TiB; K, M, G and T alone are binary; KB, MB... are decimal).
func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsDigit(r) && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("invalid size %q (e.g. 512MiB, 100MB, 4096)", v)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[strings.ToLower(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("invalid size unit in %q (use B, KiB, MiB, GiB, KB, MB, GB)", v)
	}
	total := f * mult
	if total > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", v)
	}
	return int64(total), nil
}

// formatSize prints a size the way parseSize reads it back.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return strconv.FormatInt(n, 10)
}

// delayFlag is a duration flag whose error explains the unit (a bare "1" is not a duration).
type delayFlag struct{ d *time.Duration }

// String prints the duration.
func (f delayFlag) String() string {
	if f.d == nil {
		return "0s"
	}
	return f.d.String()
}

// Set parses a Go duration; "0" alone means none.
func (f delayFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	if v == "0" {
		*f.d = 0
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if _, nerr := strconv.ParseFloat(v, 64); nerr == nil {
			return fmt.Errorf("%q has no unit: write %ss for seconds or %sms for milliseconds", v, v, v)
		}
		return fmt.Errorf("%q is not a duration (e.g. 500ms, 1s, 1m30s)", v)
	}
	*f.d = d
	return nil
}

// suggestFlag returns the flag of fs closest to the unknown name (a prefix of it, or at most
// two edits away), or "".
func suggestFlag(fs *flag.FlagSet, name string) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) > 1 {
			names = append(names, f.Name)
		}
	})
	return suggest(name, names)
}

// suggest returns the candidate closest to word: the only one it is a prefix of, or the
// nearest within two edits (ties: the first). "" when none is close.
func suggest(word string, candidates []string) string {
	word = strings.ToLower(word)
	var prefixed []string
	for _, c := range candidates {
		if len(word) >= 2 && strings.HasPrefix(c, word) {
			prefixed = append(prefixed, c)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(word, c); d < bestDist && d < len(c) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
