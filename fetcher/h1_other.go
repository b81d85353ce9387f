//go:build !unix

package fetcher

// initQuiet prepares quiet for a new connection: nothing to prepare here.
func (pc *h1Conn) initQuiet() { pc.noRaw = true }

// quiet reports whether the idle connection pc may be reused: where it cannot be checked
// without reading (see the unix version), it counts as quiet.
func (pc *h1Conn) quiet() bool { return true }
