package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/bench/originlib"
	"github.com/paperfetch/paperfetch/internal/cli"
)

// BenchmarkGet runs `paperfetch get` (the CLI's entry point, in this process, so that
// -cpuprofile covers it) on B1's input: $PIPELINE_PAPERS papers of $PIPELINE_SIZE bytes,
// concurrency 2×$PIPELINE_SLOTS, politeness off, a fresh --out every iteration (kept until the
// benchmark ends).
func BenchmarkGet(b *testing.B) {
	papers := envInt(b, "PIPELINE_PAPERS", 2000)
	size := envInt(b, "PIPELINE_SIZE", 65536)
	conc := 2 * envInt(b, "PIPELINE_SLOTS", 8)
	base := os.Getenv("PAPERFETCH_BENCH_ORIGIN")
	if base == "" {
		o, err := originlib.New(originlib.Config{})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(o)
		defer srv.Close()
		base = srv.URL
	}
	var list strings.Builder
	for i := range papers {
		fmt.Fprintf(&list, "%s/pdf/%d?size=%d\n", base, i, size)
	}
	input := filepath.Join(b.TempDir(), "list")
	if err := os.WriteFile(input, []byte(list.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(papers) * int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		out := filepath.Join(b.TempDir(), "out")
		var stdout, stderr bytes.Buffer
		env := cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }}
		args := []string{"get", "--per-host-delay", "0s", "--per-host-concurrency", fmt.Sprint(conc), "--concurrency", fmt.Sprint(conc),
			"--allow-private-networks", "--quiet", "--max-size", "8GiB", "--out", out, input}
		b.StartTimer()
		if code := cli.Main(context.Background(), args, env); code != cli.ExitOK {
			b.Fatalf("paperfetch get exited %d:\n%s\n%s", code, stdout.String(), stderr.String())
		}
		// The output stays until the benchmark ends (b.TempDir): deleting it here made every
		// later iteration's new files slow on ext4 without a journal, which skips inodes freed
		// in the last 60 s by scanning them one by one (bench/ANALYSIS.md, "CPU per paper"): with
		// the deletion, 37% of the profile's samples were in openat.
	}
	b.ReportMetric(float64(papers)*float64(b.N)/b.Elapsed().Seconds(), "papers/s")
}
