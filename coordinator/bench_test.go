package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// benchFetcher is a minimal fake fetcher for benchmarks: it completes every Assign at once
// and returns credits in groups.
func benchFetcher(b *testing.B, h *harness, id string, slots int, completed *atomic.Int64) func() {
	return benchFetcherWith(b, h, id, slots, completed, completedEv)
}

// benchFetcherWith is benchFetcher completing every Assign with the event completion makes.
func benchFetcherWith(b *testing.B, h *harness, id string, slots int, completed *atomic.Int64, completion func(*pb.Assign) *pb.DownloadEvent) func() {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := h.gw.Work(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: id, BootId: id, Slots: int32(slots)}}}); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pending := 0
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			a := m.GetAssign()
			if a == nil {
				continue
			}
			// A completion the gateway accepts (a SHA-256 and its content-addressed blob key).
			if err := stream.Send(eventReq(a, 1, completion(a))); err != nil {
				return
			}
			completed.Add(1)
			if pending++; pending >= 16 {
				if err := stream.Send(creditsReq(pending)); err != nil {
					return
				}
				pending = 0
			}
		}
	}()
	// Return the last partial credits periodically is unnecessary: slots exceed the group size.
	return func() { cancel(); <-done }
}

// BenchmarkDurableCompletions measures completions per second through real gRPC streams
// (bufconn) with fsynced group commits: every completion is durable before its Ack.
func BenchmarkDurableCompletions(b *testing.B) {
	reg := prometheus.NewRegistry()
	h := startHarness(b, func(c *Config) {
		c.PerHostConcurrency = 1 << 16
		c.InboxSize = 1 << 16
		c.Registerer = reg
	})
	n := max(b.N, 5000)
	submitBenchBatch(b, h, n)
	var completed atomic.Int64
	b.ResetTimer()
	elapsed, _ := runCompletions(b, h, n, 4, func(name string) func() {
		return benchFetcher(b, h, name, 512, &completed)
	})
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "paperfetch_coordinator_store_commit_records" {
			hg := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(float64(hg.GetSampleCount())/elapsed.Seconds(), "commits/s")
			b.ReportMetric(hg.GetSampleSum()/float64(hg.GetSampleCount()), "records/commit")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkVerifiedCompletions is BenchmarkDurableCompletions with a local (file://) blob
// store, as `paperfetch get` runs its coordinator: every completion is verified (one blob,
// which every completion names) before the paper SUCCEEDED. cpu-µs/completion is the
// process's CPU time (user and system, getrusage) per completion, fake fetchers included.
func BenchmarkVerifiedCompletions(b *testing.B) {
	blobDir := b.TempDir()
	url := "file://" + filepath.ToSlash(blobDir)
	bucket, err := blobstore.Open(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = bucket.Close() }()
	content := []byte("%PDF-1.7\n" + strings.Repeat("x", 991))
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	key := blobstore.ContentKey(sha)
	if err := bucket.WriteAll(context.Background(), key, content, nil); err != nil {
		b.Fatal(err)
	}
	h := startHarness(b, func(c *Config) {
		c.PerHostConcurrency = 1 << 16
		c.InboxSize = 1 << 16
		c.Bucket, c.BucketURL = bucket, url
	})
	n := max(b.N, 5000)
	submitBenchBatch(b, h, n)
	var completed atomic.Int64
	completion := func(a *pb.Assign) *pb.DownloadEvent {
		return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{
			Sha256: sha, Size: int64(len(content)), BlobKey: key, FinalUrl: a.GetUrl(), ContentType: "application/pdf"}}}
	}
	b.ResetTimer()
	_, cpu := runCompletions(b, h, n, 2, func(name string) func() {
		return benchFetcherWith(b, h, name, 512, &completed, completion)
	})
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/completion")
	b.ReportMetric(0, "ns/op")
}

// runCompletions starts fetchers fake fetchers (start makes the one named name and returns
// its stop), waits for batch "bench" of n papers to end, stops the timer and the fetchers,
// checks that every paper SUCCEEDED and reports completions/s; it returns the wall and CPU
// time from the fetchers' start to the batch's end.
func runCompletions(b *testing.B, h *harness, n, fetchers int, start func(name string) func()) (elapsed, cpu time.Duration) {
	cpu0 := cpuTime(b)
	t0 := time.Now()
	var stops []func()
	for i := range fetchers {
		stops = append(stops, start(fmt.Sprintf("f%d", i)))
	}
	final := watchToEnd(b, h, "bench")
	elapsed, cpu = time.Since(t0), cpuTime(b)-cpu0
	b.StopTimer()
	for _, s := range stops {
		s()
	}
	if final.GetCounts().GetSucceeded() != int64(n) {
		b.Fatalf("final %v", final)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "completions/s")
	return elapsed, cpu
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// submitBenchBatch submits batch "bench" of n papers on 100 hosts, in chunks of 5,000.
func submitBenchBatch(b *testing.B, h *harness, n int) {
	ctx := ctxT(b)
	if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: "bench"}); err != nil {
		b.Fatal(err)
	}
	chunks := 0
	for i := 0; i < n; i += 5000 {
		papers := make([]*pb.PaperSpec, 0, 5000)
		for j := i; j < min(i+5000, n); j++ {
			papers = append(papers, &pb.PaperSpec{PaperId: fmt.Sprintf("p%d", j), Urls: []string{fmt.Sprintf("https://h%d.example/p%d.pdf", j%100, j)}})
		}
		if _, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "bench", ChunkIndex: int64(chunks), Papers: papers}); err != nil {
			b.Fatal(err)
		}
		chunks++
	}
	if _, err := h.api.SealBatch(ctx, &pb.SealBatchRequest{BatchId: "bench", ChunkCount: int64(chunks)}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReadsDuringCommits measures the latency of GetBatch and of GetPaper (two clients,
// each calling in a loop) while 4 fetchers complete 50,000 papers through fsynced group
// commits (as BenchmarkDurableCompletions): reads do not wait for those commits.
func BenchmarkReadsDuringCommits(b *testing.B) {
	h := startHarness(b, func(c *Config) {
		c.PerHostConcurrency = 1 << 16
		c.InboxSize = 1 << 16
	})
	const n = 50000
	submitBenchBatch(b, h, n)
	ctx := ctxT(b)
	var completed atomic.Int64
	var stops []func()
	for i := 0; i < 4; i++ {
		stops = append(stops, benchFetcher(b, h, fmt.Sprintf("f%d", i), 512, &completed))
	}
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	// reads calls read until 90% of the papers completed and returns each call's latency.
	reads := func(read func(i int) error) chan []time.Duration {
		out := make(chan []time.Duration, 1)
		go func() {
			var lat []time.Duration
			for i := 0; completed.Load() < n*9/10; i++ {
				start := time.Now()
				if err := read(i); err != nil {
					b.Error(err)
					break
				}
				lat = append(lat, time.Since(start))
			}
			out <- lat
		}()
		return out
	}
	b.ResetTimer()
	gb := reads(func(int) error {
		_, err := h.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "bench"})
		return err
	})
	gp := reads(func(i int) error {
		_, err := h.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "bench", PaperId: fmt.Sprintf("p%d", i%n)})
		return err
	})
	getBatch, getPaper := <-gb, <-gp
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		if len(d) == 0 {
			return
		}
		slices.Sort(d)
		at := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
		b.ReportMetric(at(0.5), name+"-p50-ms")
		b.ReportMetric(at(0.99), name+"-p99-ms")
		b.ReportMetric(float64(len(d)), name+"-calls")
	}
	report("GetBatch", getBatch)
	report("GetPaper", getPaper)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMillionPapers measures the heap used per tracked paper with 1,000,000 queued
// papers and again once all succeeded (the cache indexes then hold them too), and the time
// to restart (open the store and reload everything) with 1,000,000 succeeded papers.
func BenchmarkMillionPapers(b *testing.B) {
	const total = 1_000_000
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		cfg := func(c *Config) { c.DataDir = dir }
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		h := newEngHarness(b, cfg)
		create := &submitReq{op: opCreate, batchID: "m", reply: make(chan submitResult, 1)}
		h.apply(create)
		for c := 0; c < total/5000; c++ {
			papers := make([]*pb.PaperSpec, 5000)
			for j := range papers {
				k := c*5000 + j
				papers[j] = &pb.PaperSpec{PaperId: fmt.Sprintf("arXiv:%07d", k), Urls: []string{fmt.Sprintf("https://h%d.example/pdf/%07d.pdf", k%1000, k)}}
			}
			pp, sum, err := preparePapers("papers", papers)
			if err != nil {
				b.Fatal(err)
			}
			r := &submitReq{op: opAppend, batchID: "m", chunkIndex: int64(c), papers: pp, hash: sum, reply: make(chan submitResult, 1)}
			h.apply(r)
			if res := <-r.reply; res.err != nil {
				b.Fatal(res.err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := len(h.e.papers); got != total {
			b.Fatalf("%d papers", got)
		}
		perPaper := float64(after.HeapAlloc-before.HeapAlloc) / total

		// Complete every paper (engine-level: one iteration per round of 10,000 events).
		fc := h.connect("f", 10_000)
		for {
			as, _, _ := recv(fc)
			if len(as) == 0 {
				break
			}
			now := h.clk.Now()
			for _, a := range as {
				(&streamMsg{c: fc, req: eventReq(a, 1, completedEv(a))}).apply(h.e, now)
			}
			(&streamMsg{c: fc, req: creditsReq(len(as))}).apply(h.e, now)
			h.step()
		}
		if n := h.batch("m").counts[stateSucceeded]; n != total {
			b.Fatalf("%d succeeded", n)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perDone := float64(after.HeapAlloc-before.HeapAlloc) / total
		h.close()
		h.e = nil
		runtime.GC()

		start := time.Now()
		ocfg := DefaultConfig()
		ocfg.DataDir, ocfg.PerHostDelay, ocfg.Logger = dir, 0, testLogger(b)
		c, err := Open(ocfg)
		if err != nil {
			b.Fatal(err)
		}
		restart := time.Since(start)
		if len(c.eng.papers) != total {
			b.Fatalf("reloaded %d papers", len(c.eng.papers))
		}
		_ = c.Close()
		b.ReportMetric(perPaper, "heap-B/paper")
		b.ReportMetric(perDone, "heap-B/done-paper")
		b.ReportMetric(restart.Seconds(), "restart-s")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPreparePapers measures AppendPapers' preparation of a chunk of 5,000 papers (the
// cheap checks, the deterministic encoding of each spec, the chunk's digest): per paper.
func BenchmarkPreparePapers(b *testing.B) {
	papers := make([]*pb.PaperSpec, 5000)
	for j := range papers {
		papers[j] = &pb.PaperSpec{PaperId: fmt.Sprintf("p%d", j), Urls: []string{fmt.Sprintf("https://h%d.example/p%d.pdf", j%100, j)}}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := preparePapers("papers", papers); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(papers)), "ns/paper")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPaperUpdates measures what a watcher that includes papers reads per changed paper
// (paperUpdates: the stored record and the id and URL of its spec), in groups of
// watchReadGroup, on 5,000 queued papers: per paper.
func BenchmarkPaperUpdates(b *testing.B) {
	h := startHarness(b, nil)
	submitBenchBatch(b, h, 5000)
	a := &api{c: h.c}
	idxs := make([]uint32, 5000)
	for i := range idxs {
		idxs[i] = uint32(i)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for off := 0; off < len(idxs); off += watchReadGroup {
			ups, err := a.paperUpdates(idxs[off:min(off+watchReadGroup, len(idxs))])
			if err != nil || ups[0].GetUrl() == "" {
				b.Fatal(ups[0], err)
			}
		}
		n += len(idxs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/paper")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEventLeaseCheck measures the check of an event's lease id on the stream holding the
// lease: checkEvent (the loop's, once per event) against the full MAC check (leaseIDs.check).
func BenchmarkEventLeaseCheck(b *testing.B) {
	h := newMemEngHarness(b, nil)
	h.submit("b", oneHost("p", 1))
	c := h.connect("f", 1)
	as, _, _ := recv(c)
	id := as[0].GetLeaseId()
	b.Run("checkEvent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok := h.e.checkEvent(id, c); !ok {
				b.Fatal(id)
			}
		}
	})
	b.Run("mac", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok := h.e.ids.check(id, c.id); !ok {
				b.Fatal(id)
			}
		}
	})
}
