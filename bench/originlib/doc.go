// Package originlib is a deterministic, fault-injecting PDF origin for paperfetch's benchmarks
// (bench/origin) and its fault-injection suite (internal/faulttest).
//
// GET /pdf/{n}?size=BYTES serves "%PDF-1.7\n" followed by pseudo-random bytes derived from n
// alone, so the SHA-256 of paper n at a given size is reproducible (see SHA256). Responses
// honour Range/If-Range (http.ServeContent, with a strong ETag). Query parameters, or the
// origin's defaults, inject slowness and failures; see Faults. GET /stats returns the counters as
// JSON, POST /reset clears them.
package originlib
