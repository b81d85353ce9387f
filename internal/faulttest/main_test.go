package faulttest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	flagLong   = flag.Bool("fault.long", false, "run the long form (more papers, more kills)")
	flagReport = flag.String("fault.report", "", "write a Markdown summary of the run to this file")
	flagRace   = flag.String("fault.race", "auto", "build the binaries with -race: auto (when the test binary is), on, off")
	flagKeep   = flag.Bool("fault.keep", false, "keep the work folder (processes' logs, store, blobs)")
)

// binaries are the paths of the binaries built by TestMain (empty under -short).
type binaries struct {
	coordinator, fetcher string
	race                 bool
}

// bins is set once by TestMain before any test runs and only read afterwards.
var bins binaries

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "faulttest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faulttest:", err)
		os.Exit(2)
	}
	if !testing.Short() {
		if bins, err = build(dir); err != nil {
			fmt.Fprintln(os.Stderr, "faulttest:", err)
			_ = os.RemoveAll(dir)
			os.Exit(2)
		}
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { _ = os.RemoveAll(dir) }))
}

// build compiles cmd/coordinator and cmd/fetcher into dir.
func build(dir string) (binaries, error) {
	race := raceEnabled
	switch *flagRace {
	case "auto":
	case "on":
		race = true
	case "off":
		race = false
	default:
		return binaries{}, fmt.Errorf("-fault.race must be auto, on or off, got %q", *flagRace)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return binaries{}, fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/coordinator", "./cmd/fetcher")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return binaries{}, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return binaries{
		coordinator: filepath.Join(dir, "coordinator"),
		fetcher:     filepath.Join(dir, "fetcher"),
		race:        race,
	}, nil
}
