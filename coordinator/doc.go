// Package coordinator is the paperfetch coordinator: it owns every batch of papers and its
// state, leases papers to fetchers over FetcherGatewayService.Work, and serves the
// client-facing CoordinatorService.
//
// One goroutine, the owner loop (Run), owns all domain state (an engine). gRPC handlers and
// per-stream receivers only send it messages over a bounded inbox and wait for a reply; a full
// inbox fails API calls with RESOURCE_EXHAUSTED. The loop applies what is waiting, schedules
// work against the fetchers' credits and their hosts' politeness limits, writes every change
// of the iteration to the bbolt store in one fsynced transaction (group commit) and only then
// sends replies, Assigns, Acks and watcher updates, so nothing is acknowledged before it is
// durable. Reads see committed state only and do not wait for commits (readview.go): GetBatch
// reads immutable batch views the loop publishes after each commit, and the loop answers the
// other reads as it takes them, also while its commit runs. Each Work and WatchBatch stream
// sends from its own goroutine through a bounded buffer: the loop never blocks on a slow
// client.
//
// # The engine and its loop
//
// The engine (engine.go) is a state machine in the style of etcd-io/raft: it performs no I/O.
// It reads the committed state through a small read-only interface (storage.go, raft's
// Storage) and hands each iteration's outputs to the loop as one value, a ready (ready.go,
// raft's Ready): the writes for one transaction, the messages for fetchers, the replies,
// the completions to verify and blobs to collect, the cache entries and finished batches.
// The loop (loop.go) is the only place that performs the engine's I/O: it commits the
// writes (answering reads meanwhile), publishes the views reads see, then delivers, then
// tells the engine (applied). The tests drive the same
// iteration (loop.iterate), on the bbolt store or on an in-memory one.
//
// # Where things are
//
// The service: coordinator.go (Open, Run), loop.go (the owner loop), api.go, readpaper.go,
// views.go and watchsend.go (CoordinatorService handlers), gateway.go (the Work stream
// handler), budgets.go (per-stream budgets), verify.go and delete.go (the verifier and
// collector goroutines).
//
// The engine (engine.go: its state, grouped by responsibility) and the files that work on it:
//
//   - submit.go: building batches (SubmitBatch, CreateBatch, AppendPapers, SealBatch);
//     requests.go, views.go, delete.go, damaged.go: the other messages the loop applies;
//   - paperstate.go: paper state changes, counts, batch completion;
//   - schedule.go: hosts, politeness and leasing queued papers to fetchers;
//   - lease.go, deadline.go: leases, their ids, lifecycle and deadlines; prefetch.go:
//     successor leases that fill the fetchers' prefetch windows;
//   - inflight.go, doiflight.go: single flight by paper id, URL and DOI;
//   - gateway_engine.go: the engine side of the Work stream (Hello, events, credits, draining),
//     host health and retries; planning.go: DOI plans;
//   - cache.go: cache lookups; timers.go: what is due when (tick); publish.go: watcher updates;
//   - reads.go: reads during an iteration; ready.go: the end of an iteration;
//   - readview.go: what client reads see (committed batch views, reads during a commit);
//   - reload.go: rebuilding the engine from the store at Open.
//
// The store: storage.go (the engine's read-only view), store.go and store_delete.go (the
// buckets, the writeSet and its commit), kv.go (the key-value interface they are written
// against and its bbolt implementation, the only code that uses bbolt's types), records.go
// (memPaper, the compact in-memory paper; storedPaper, its stored form).
package coordinator
