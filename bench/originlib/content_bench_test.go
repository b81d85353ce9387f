package originlib

import "testing"

func BenchmarkContentReadAt(b *testing.B) {
	c := NewContent(1, 1<<40)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	var off int64
	for b.Loop() {
		if _, err := c.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off += int64(len(buf))
	}
}
