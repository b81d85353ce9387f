// Package version holds the release version of the paperfetch binaries.
package version

// Version is the release version. Image builds stamp it with
// -ldflags "-X github.com/paperfetch/paperfetch/internal/version.Version=..." (deploy/Dockerfile,
// whose default is this value and the tag the Kubernetes manifests deploy).
var Version = "v0.1.0"
