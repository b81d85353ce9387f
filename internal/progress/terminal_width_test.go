package progress

import (
	"testing"
	"unicode/utf8"
)

// Text beside a bar always has the same width, however many counters it shows: the bar
// neither grows nor shrinks as papers fail, wait or come from the cache.
func TestFixWidth(t *testing.T) {
	for _, s := range []string{"", " 1 KiB", " 40.0 KiB  68.3 KiB/s  ETA 29.0s  1 waiting to retry  2 failed  3 cached  (+9 more running)", "ünïcode ⏸"} {
		for _, n := range []int{1, 10, 34, 64} {
			got := fixWidth(s, n)
			if k := utf8.RuneCountInString(got); k != n {
				t.Errorf("fixWidth(%q, %d) = %q: %d runes", s, n, got, k)
			}
			if utf8.RuneCountInString(s) > n && []rune(got)[n-1] != '…' {
				t.Errorf("fixWidth(%q, %d) = %q: cut without an ellipsis", s, n, got)
			}
		}
	}
}
