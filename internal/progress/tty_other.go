//go:build !linux

package progress

import "os"

// IsTerminal reports whether f is a terminal (a character device, on this platform).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// terminalHeight returns the number of rows of the terminal f, or 0 when unknown.
func terminalHeight(*os.File) int { return 0 }
