// Package roguetest is paperfetch's rogue-fetcher suite: it runs the real coordinator behind
// the real gRPC server (interceptors, auth guard) on 127.0.0.1 and attacks its
// FetcherGatewayService with hand-written Work streams (the generated stubs, no fetcher
// library): impossible Hellos, malformed events, events for leases of other streams, forged
// completions, leases held past their deadline, impersonation and floods. Each test asserts
// the safe outcome: the coordinator survives, nothing is SUCCEEDED without a verified blob,
// the cache is not poisoned, leases are reclaimed on time (on a fake clock) and other clients
// are still served. The package has no non-test code.
package roguetest
