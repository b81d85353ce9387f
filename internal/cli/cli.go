// Package cli implements the paperfetch command: `paperfetch get` downloads the papers of an
// input list with an embedded coordinator and fetchers (package embedded, whose Options are
// get's flags), and the remote subcommands (submit, watch, status, ls, cancel, retry, pull)
// drive a running coordinator over gRPC. It depends on package embedded, the generated code
// and leaf helpers only: never on the coordinator or the fetcher directly.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/storagefull"
)

// Exit codes, in wget's spirit.
const (
	// ExitOK means every paper succeeded (or the command did what it was asked).
	ExitOK = 0
	// ExitFailed means some papers failed or were cancelled, or a remote call failed.
	ExitFailed = 1
	// ExitUsage means a usage or input error: bad flags, unreadable input, malformed lines with
	// --strict, nothing to do.
	ExitUsage = 2
	// ExitInterrupted means the run was interrupted (SIGINT/SIGTERM); rerunning resumes it.
	ExitInterrupted = 3
	// ExitStorage means the run stopped because the disk is full (or over quota, or read-only);
	// what was done is kept, and rerunning once there is room resumes it.
	ExitStorage = 4
	// ExitUnreachable means the coordinator could not be reached (remote commands).
	ExitUnreachable = 5
)

// exitCodeFor returns ExitStorage for an out-of-space (quota, read-only) error, else code.
func exitCodeFor(err error, code int) int {
	if storagefull.Is(err) {
		return ExitStorage
	}
	return code
}

// Env is the process environment the command runs in; tests substitute every part of it.
type Env struct {
	// Stdin, Stdout and Stderr are the standard streams.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// LookupEnv reads environment variables (os.LookupEnv).
	LookupEnv func(string) (string, bool)
}

// OSEnv is the Env of the running process.
func OSEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv}
}

// usageError is a command-line mistake: it exits with ExitUsage.
type usageError struct{ msg string }

// Error returns the message.
func (e *usageError) Error() string { return e.msg }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries an exit code with an error already reported to the user (or none).
type exitError struct {
	code int
	err  error
}

// Error returns the wrapped error's message, or the exit status.
func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// Unwrap returns the wrapped error.
func (e *exitError) Unwrap() error { return e.err }

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(a *app, ctx context.Context, args []string) error
}

// commands lists the subcommands in the order of the help text.
func commands() []command {
	return []command{
		{"get", "download the papers of input lists into a folder (embedded coordinator and fetchers)", (*app).get},
		{"submit", "submit input lists to a coordinator as one batch and print its id", (*app).submit},
		{"watch", "follow a batch's progress until it finishes", (*app).watch},
		{"status", "show one batch, or a table of the recent batches", (*app).status},
		{"ls", "list batches, or the papers of a batch", (*app).ls},
		{"cancel", "cancel a batch", (*app).cancel},
		{"rm", "delete finished batches and their papers from a coordinator", (*app).rm},
		{"retry", "queue the failed papers of a batch again", (*app).retry},
		{"pull", "download a batch's stored PDFs from a coordinator into a folder", (*app).pull},
		{"resolve", "print the PDF candidates each route gives for DOIs (no download)", (*app).resolve},
		{"version", "print the version", (*app).version},
		{"help", "show help for a command", (*app).help},
	}
}

// app is one invocation of the command.
type app struct {
	env   Env
	usage func() // prints the usage of the command being parsed (newFlagSet)
	// wrapPlace, when set (tests), wraps how `get` places each succeeded paper.
	wrapPlace func(placeFunc) placeFunc
	// wrapClient, when set (tests), wraps the client `get` calls its embedded coordinator with.
	wrapClient func(pb.CoordinatorServiceClient) pb.CoordinatorServiceClient
}

// Main runs the command with args (without the program name) and returns the exit code. ctx is
// cancelled on SIGINT/SIGTERM; commands then stop cleanly and Main returns ExitInterrupted.
func Main(ctx context.Context, args []string, env Env) int {
	if env.LookupEnv == nil {
		env.LookupEnv = func(string) (string, bool) { return "", false }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	a := &app{env: env}
	if len(args) == 0 {
		a.printUsage(env.Stderr)
		return ExitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		a.printUsage(env.Stdout)
		return ExitOK
	case "-version", "--version", "-V":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			return a.exit(name, c.run(a, ctx, args[1:]), ctx)
		}
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	hint := ""
	if s := suggest(name, names); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	fmt.Fprintf(env.Stderr, "paperfetch: unknown command %q%s\nRun 'paperfetch help' for the list of commands.\n", name, hint)
	return ExitUsage
}

// exit maps a command's error to an exit code, printing it when it has not been reported.
func (a *app) exit(name string, err error, ctx context.Context) int {
	if err == nil {
		return ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.env.Stderr, "paperfetch %s: %s\nRun 'paperfetch help %s' for usage.\n", name, ue.msg, name)
		return ExitUsage
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(a.env.Stderr, "paperfetch %s: %v\n", name, ee.err)
		}
		return ee.code
	}
	if ctx.Err() != nil {
		fmt.Fprintf(a.env.Stderr, "paperfetch %s: interrupted\n", name)
		return ExitInterrupted
	}
	fmt.Fprintf(a.env.Stderr, "paperfetch %s: %v\n", name, err)
	return ExitFailed
}

func (a *app) printUsage(w io.Writer) {
	fmt.Fprint(w, `paperfetch downloads batches of papers (PDFs) politely, resumably and verifiably.

Usage:
  paperfetch get [flags] INPUT...      download the papers listed in INPUT files ("-": stdin)
  paperfetch COMMAND [flags] [ARGS]    drive a running coordinator

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
An INPUT has one entry per line: an http(s) URL, an arXiv id (2301.00001, hep-th/9901001,
arXiv:2301.00001v2), a DOI (10.1234/abc, doi:..., https://doi.org/...) or a JSON object
{"id": ..., "urls": [...], "doi": ..., "sha256": ...}; or it is CSV with a header (id,url,doi,...),
BibTeX (.bib), RIS (.ris) or CSL-JSON. Blank lines and # comments are ignored.

Example:
  paperfetch get --out papers list.txt

Run 'paperfetch help COMMAND' for a command's flags.
`)
}

func (a *app) version(_ context.Context, args []string) error {
	if len(args) > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintf(a.env.Stdout, "paperfetch %s\n", versionString())
	return nil
}

// versionString describes the build: the module version, or the VCS revision and time for a
// build from a checkout, and the Go version.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown version)"
	}
	v := bi.Main.Version
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if v == "" || v == "(devel)" {
		v = "devel"
		if rev := settings["vcs.revision"]; rev != "" {
			v += " " + rev[:min(12, len(rev))]
			if settings["vcs.modified"] == "true" {
				v += "+dirty"
			}
			if t := settings["vcs.time"]; t != "" {
				v += " " + t
			}
		}
	}
	return v + " " + bi.GoVersion
}

func (a *app) help(ctx context.Context, args []string) error {
	if len(args) == 0 {
		a.printUsage(a.env.Stdout)
		return nil
	}
	if len(args) > 1 {
		return usagef("help takes one command name")
	}
	for _, c := range commands() {
		if c.name == args[0] && c.name != "help" && c.name != "version" {
			return c.run(a, ctx, []string{"--help"})
		}
	}
	if args[0] == "help" || args[0] == "version" {
		a.printUsage(a.env.Stdout)
		return nil
	}
	return usagef("unknown command %q", args[0])
}
