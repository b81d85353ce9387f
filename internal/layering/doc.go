// Package layering holds no code: its test checks the module's import rules (README, Layout):
// the coordinator and the fetcher never import each other nor the CLI; internal/cli uses the
// embedded system, the generated code and leaf helpers only; the shared packages under
// internal/ import no product package (coordinator, fetcher, embedded, dashboard), and
// internal/grpcserver not even the generated code.
package layering
