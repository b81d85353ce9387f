// Package faulttest is paperfetch's fault-injection suite: it builds the real coordinator and
// fetcher binaries, runs them as separate processes against a flaky, slow local origin
// (bench/originlib), and while a batch of papers downloads it SIGKILLs and restarts the
// coordinator, SIGKILLs fetchers and starts new ones, and SIGTERMs a fetcher mid-download. At
// the end every paper must have succeeded exactly once with the origin's SHA-256, the blob store
// must hold exactly the content-addressed blobs, and the coordinator's counts must equal what the
// origin served.
//
// The suite is a test only:
//
//	go test ./internal/faulttest/                      short form (500 papers), run by CI
//	go test ./internal/faulttest/ -fault.long -v       long form (more papers, more kills)
//
// Flags: -fault.long, -fault.report FILE (a Markdown summary, used by bench/run),
// -fault.race auto|on|off (build the binaries with -race; auto follows the test binary),
// -fault.keep (keep the work folder with the processes' logs). -short skips the suite.
package faulttest
