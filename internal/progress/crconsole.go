package progress

import (
	"io"

	"github.com/vbauerster/cupwriter"
)

// crConsole is mpb's terminal writer with a carriage return at the start of every frame. When
// the user presses Ctrl-C the terminal echoes "^C" where the cursor is (the frame's first
// column); without the "\r" the next frame would start two columns in, its first line would
// wrap, and a stale line would be left on the screen.
type crConsole struct {
	*cupwriter.Writer
	fresh bool // the next byte starts a frame
}

func newCRConsole(out io.Writer) *crConsole {
	return &crConsole{Writer: cupwriter.New(out, false), fresh: true}
}

func (c *crConsole) mark() {
	if c.fresh {
		c.fresh = false
		_ = c.Writer.WriteByte('\r')
	}
}

// ReadFrom appends a rendered line to the frame.
func (c *crConsole) ReadFrom(r io.Reader) (int64, error) {
	c.mark()
	return c.Writer.ReadFrom(r)
}

// Write appends bytes to the frame.
func (c *crConsole) Write(p []byte) (int, error) {
	c.mark()
	return c.Writer.Write(p)
}

// Flush writes the frame and moves the cursor back to its start.
func (c *crConsole) Flush(lines int) error {
	c.mark()
	err := c.Writer.Flush(lines)
	c.fresh = true
	return err
}
