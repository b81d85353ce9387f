//go:build !linux

package progress

import "os"

// IsTerminal reports whether f is a terminal (a character device, on this platform).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// terminalSize returns the columns and rows of the terminal f, or zeros when unknown.
func terminalSize(*os.File) (cols, rows int) { return 0, 0 }
