package originlib

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
)

// Header is the first bytes of every served PDF.
const Header = "%PDF-1.7\n"

// golden is the splitmix64 increment.
const golden = 0x9E3779B97F4A7C15

// Content is the deterministic body of paper N at a given size. It is an io.ReaderAt, so
// any range of it can be produced without generating what comes before: byte i of the body
// (after Header) is byte i%8 of splitmix64(seed(N) + (i/8+1)·golden).
type Content struct {
	n    uint64
	size int64
	seed uint64
}

// NewContent returns the content of paper n, size bytes long. A size smaller than len(Header)
// is raised to len(Header).
func NewContent(n uint64, size int64) *Content {
	if size < int64(len(Header)) {
		size = int64(len(Header))
	}
	return &Content{n: n, size: size, seed: mix(n ^ 0x5bd1e9955bd1e995)}
}

// Size returns the length of the content in bytes.
func (c *Content) Size() int64 { return c.size }

// ReadAt implements io.ReaderAt.
func (c *Content) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("originlib: negative offset %d", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	n := len(p)
	if rem := c.size - off; int64(n) > rem {
		n = int(rem)
	}
	buf := p[:n]
	// Header part.
	if off < int64(len(Header)) {
		k := copy(buf, Header[off:])
		buf = buf[k:]
		off += int64(k)
	}
	body := off - int64(len(Header))
	// Unaligned head of the body.
	for len(buf) > 0 && body%8 != 0 {
		buf[0] = c.byteAt(body)
		buf = buf[1:]
		body++
	}
	// Whole words.
	word := uint64(body / 8)
	for len(buf) >= 8 {
		binary.LittleEndian.PutUint64(buf, mix(c.seed+(word+1)*golden))
		buf = buf[8:]
		word++
		body += 8
	}
	// Tail.
	for len(buf) > 0 {
		buf[0] = c.byteAt(body)
		buf = buf[1:]
		body++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// byteAt returns byte i of the body (after the header).
func (c *Content) byteAt(i int64) byte {
	w := mix(c.seed + (uint64(i/8)+1)*golden)
	return byte(w >> (8 * uint(i%8)))
}

// SHA256 returns the lowercase hex SHA-256 of the content.
func (c *Content) SHA256() string {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(c, 0, c.size)); err != nil {
		// Unreachable: ReadAt never fails inside [0, size).
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256 returns the lowercase hex SHA-256 of paper n served at size bytes.
func SHA256(n uint64, size int64) string { return NewContent(n, size).SHA256() }

// mix is the splitmix64 finaliser.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}
