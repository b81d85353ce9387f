// Package deploy holds the Kubernetes manifests (kubernetes/, kustomize) and the container
// image (Dockerfile) of paperfetch, and the tests that render every overlay, decode every object
// strictly into the Kubernetes API types and check that probes, ports, images, environment and
// flags line up with the binaries. It is a separate Go module so that k8s.io dependencies stay
// out of the main module.
package deploy
