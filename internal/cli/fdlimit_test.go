//go:build unix

package cli

import (
	"syscall"
	"testing"
)

// get's output copies stay within a quarter of the descriptor limit: at a hard limit of 1024,
// 1024 copies (2d4b983's bound) would have taken every descriptor of the run, and its spool
// files, connections and placements would have failed with EMFILE. Not parallel: it lowers the
// process's limit.
func TestOutTapBoundFollowsTheDescriptorLimit(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{{0, maxOutTaps}, {3, 1}, {1024, 256}, {4096, maxOutTaps}, {1 << 20, maxOutTaps}} {
		if got := outTapBound(tc.limit); got != tc.want {
			t.Errorf("outTapBound(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur < 1024 {
		t.Skipf("descriptor limit %d below 1024", old.Cur)
	}
	low := old
	low.Cur = 1024
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip("cannot set the descriptor limit:", err)
	}
	got := outTapBound(descriptorLimit())
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if got != 256 {
		t.Fatalf("at a descriptor limit of 1024, get opens up to %d output copies, want 256", got)
	}
}
