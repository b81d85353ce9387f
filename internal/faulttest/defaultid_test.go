package faulttest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestDefaultFlagsFetchersOnOneMachine starts three fetchers on this machine without --id (the
// defaults an operator gets with docker host networking, systemd instances or a laptop). Each
// process has its own id, so none evicts another (issue 13: with the hostname as the id they
// replaced each other about every second, forever) and the batch finishes.
func TestDefaultFlagsFetchersOnOneMachine(t *testing.T) {
	ctx, c, _, srv := startScenario(t, 2*time.Minute)
	coord := c.startCoordinator()
	for range 3 {
		c.startFetcherWith(4, false)
	}
	client := c.client()

	runBatch(ctx, t, client, "default-ids", makePapers(srv.URL, 120))
	if bad := c.stopAll(ctx); len(bad) > 0 {
		t.Errorf("processes that did not stop cleanly: %s", strings.Join(bad, "; "))
	}
	log, err := os.ReadFile(coord.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "replaced by a new stream"); n > 0 {
		t.Fatalf("fetchers replaced each other %d times", n)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, `"msg":"fetcher connected"`) {
			_, rest, _ := strings.Cut(line, `"fetcher":"`)
			id, _, _ := strings.Cut(rest, `"`)
			ids[id] = true
		}
	}
	if len(ids) != 3 {
		t.Fatalf("the coordinator saw fetcher ids %v, want 3 distinct ones", fmt.Sprint(ids))
	}
}
