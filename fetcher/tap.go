package fetcher

import "io"

// BodyTap receives a copy of the PDFs downloaded for papers (Config.Tap), written by the same
// Write calls that feed the body's SHA-256, so that a copy finished with a digest holds exactly
// the bytes of that digest: the embedded `paperfetch get` writes each output file while it is
// downloaded instead of reading the blob back and hashing it again.
type BodyTap interface {
	// Open returns where to copy the body of the download of the paper that starts now
	// (a lease's download, not a resolution step nor a FetcherService.Fetch call), or nil for
	// no copy. It is called from the download's goroutine, before the request, and must not
	// block.
	Open(batchID, paperID string) TapWriter
}

// TapWriter is the copy of one download's body (BodyTap.Open). Write is called with the body's
// bytes in order, from one goroutine; then exactly one of Finish and Abort, once. A Write
// error (or a short write) makes the fetcher Abort the copy; the download goes on.
type TapWriter interface {
	io.Writer
	// Finish says that the copy is the whole body, with this SHA-256 (lower-case hex) and size
	// in bytes, and that the body is committed to the blob store under that digest: the
	// paper's download succeeded (the completed event follows).
	Finish(sha256 string, size int64)
	// Abort says that the copy is not a committed body: the download failed or was dropped, its
	// commit failed, or the body was not received whole and from its first byte in one
	// response (a resumed body, whose prefix came from the spool; a restart from the first
	// byte after a refused resume).
	Abort()
}

// bodyCopy is a download's TapWriter (w nil: none, or aborted) and the bytes written to it.
// Writes that fail abort it; Finish is called only when the bytes written are the body's size.
type bodyCopy struct {
	w TapWriter
	n int64
}

// write copies p to the tap, aborting it on an error.
func (c *bodyCopy) write(p []byte) {
	if c.w == nil {
		return
	}
	if n, err := c.w.Write(p); err != nil || n != len(p) {
		c.abort()
		return
	}
	c.n += int64(len(p))
}

// abort aborts the tap, if any.
func (c *bodyCopy) abort() {
	if c.w != nil {
		c.w.Abort()
		c.w = nil
	}
}

// finish finishes the tap with the committed body's digest and size, or aborts it when it did
// not receive exactly size bytes.
func (c *bodyCopy) finish(sha string, size int64) {
	if c.w == nil {
		return
	}
	if c.n != size {
		c.abort()
		return
	}
	c.w.Finish(sha, size)
	c.w = nil
}
