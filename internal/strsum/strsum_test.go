package strsum

import (
	"crypto/sha256"
	"strings"
	"testing"
)

// SHA256 equals sha256.Sum256 for the empty string, both sides of the stack bound and a long
// string, and allocates nothing up to the bound.
func TestSHA256(t *testing.T) {
	for _, n := range []int{0, 1, StackBytes - 1, StackBytes, StackBytes + 1, 10 * StackBytes} {
		s := strings.Repeat("a", n)
		if got, want := SHA256(s), sha256.Sum256([]byte(s)); got != want {
			t.Fatalf("len %d: %x, want %x", n, got, want)
		}
	}
	s := strings.Repeat("u", StackBytes)
	if a := testing.AllocsPerRun(100, func() { _ = SHA256(s) }); a != 0 {
		t.Fatalf("%v allocations for %d bytes, want 0", a, len(s))
	}
}

// FuzzSHA256: any string hashes as sha256.Sum256 of its bytes.
func FuzzSHA256(f *testing.F) {
	f.Add("http://example.org/a.pdf")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := SHA256(s), sha256.Sum256([]byte(s)); got != want {
			t.Fatalf("%q: %x, want %x", s, got, want)
		}
	})
}
