package dashboard_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestVendoredAssets pins the vendored chart library to the files of the npm package
// uplot@1.6.32 (tarball integrity sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==:
// dist/uPlot.iife.min.js, dist/uPlot.min.css and LICENSE, copied unchanged), and checks that
// the page loads nothing from another origin (the CSP would block it; this says so before a
// browser does).
func TestVendoredAssets(t *testing.T) {
	for name, want := range map[string]string{
		"vendor/uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
		"vendor/uPlot.min.css":     "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
		"vendor/uPlot.LICENSE":     "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
	} {
		b, err := os.ReadFile(filepath.Join("assets", name))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
			t.Errorf("%s: sha256 %x, want %s (uplot@1.6.32 from npm)", name, sum, want)
		}
	}
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`)
	for _, name := range []string{"index.html", "app.css", "app.js"} {
		b, err := os.ReadFile(filepath.Join("assets", name))
		if err != nil {
			t.Fatal(err)
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s loads from another origin: %s", name, m)
		}
	}
}

// TestEveryRPCHasARoute checks that the gateway's rules file maps every CoordinatorService
// method, so that a method added to the contract cannot miss its /v1/ route.
func TestEveryRPCHasARoute(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join("..", "proto", "paperfetch", "v1", "coordinator_service_http.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	svc := pb.File_paperfetch_v1_coordinator_service_proto.Services().ByName("CoordinatorService")
	methods := svc.Methods()
	if methods.Len() == 0 {
		t.Fatal("no methods in CoordinatorService")
	}
	for i := range methods.Len() {
		sel := "selector: " + string(methods.Get(i).FullName()) + "\n"
		if !strings.Contains(string(rules), sel) {
			t.Errorf("%s has no HTTP rule in coordinator_service_http.yaml", methods.Get(i).FullName())
		}
	}
}
