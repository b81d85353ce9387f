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
// durable. Each Work and WatchBatch stream sends from its own goroutine through a bounded
// buffer: the loop never blocks on a slow client.
//
// # Where things are
//
// The service: coordinator.go (Open, Run: the owner loop), api.go, readpaper.go, views.go and
// watchsend.go (CoordinatorService handlers), gateway.go (the Work stream handler), budgets.go
// (per-stream budgets), verify.go and delete.go (the verifier and collector goroutines).
//
// The engine (engine.go: its state, grouped by responsibility) and the files that work on it:
//
//   - submit.go: building batches (SubmitBatch, CreateBatch, AppendPapers, SealBatch);
//     requests.go, views.go, delete.go: the other requests the loop applies;
//   - paperstate.go: paper state changes, counts, batch completion;
//   - schedule.go: hosts, politeness and leasing queued papers to fetchers;
//   - lease.go, deadline.go: leases, their ids, lifecycle and deadlines;
//   - gateway_engine.go: the engine side of the Work stream (Hello, events, credits, draining),
//     host health and retries; planning.go: DOI plans;
//   - cache.go: cache lookups; timers.go: what is due when; publish.go: watcher updates;
//   - reads.go, commit.go: store reads during an iteration, then its commit and flush;
//   - reload.go: rebuilding the engine from the store at Open.
//
// The store: store.go and store_delete.go (bbolt buckets and the iteration's writeSet),
// records.go (memPaper, the compact in-memory paper; storedPaper, its stored form).
package coordinator
