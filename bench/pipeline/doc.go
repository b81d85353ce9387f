// Package pipeline benchmarks the whole download pipeline in one process, for profiling: a
// coordinator (durable bbolt store) and two fetchers connected over loopback gRPC, as in the
// distributed deployment, download a batch from the benchmark origin into a file:// blob store.
//
//	go test -run '^$' -bench Pipeline -benchtime 3x -cpuprofile cpu.pprof ./bench/pipeline/
//
// The origin is bench/origin at $PAPERFETCH_BENCH_ORIGIN (http://127.0.0.1:PORT) when set, so
// that its CPU is not in the profile; otherwise an in-process httptest server. The batch is
// $PIPELINE_PAPERS papers (default 2000) of $PIPELINE_SIZE bytes (default 65536), 2 fetchers ×
// $PIPELINE_SLOTS slots (default 8), politeness off, each fetcher's prefetch window
// $PIPELINE_PREFETCH (default the fetcher's). BenchmarkPipeline also reports the Work stream's
// messages per paper (msgs/paper), and the events, Assigns and Acks they carry per kind
// (in:started/paper, out:assign/paper...: a batch of them is one message).
package pipeline
