package storagefull

import (
	"fmt"
	"io/fs"
	"syscall"
	"testing"
)

func TestIs(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS} {
		err := fmt.Errorf("commit: %w", &fs.PathError{Op: "write", Path: "/x", Err: errno})
		if !Is(err) || Describe(err) == "" {
			t.Errorf("%v not recognised", err)
		}
	}
	for _, err := range []error{nil, syscall.EIO, fmt.Errorf("x: %w", syscall.ENOENT)} {
		if Is(err) || Describe(err) != "" {
			t.Errorf("%v recognised", err)
		}
	}
}

// A fetcher's reported storage error, as text, is recognised and described again (the get
// summary said "no space left" without what ran out when the spool, not the output, filled).
func TestFromMessage(t *testing.T) {
	for msg, want := range map[string]string{
		"spool: write /o/.paperfetch/blobs/x.part: no space left on device": "no space left on the device",
		"commit /b/ab/cd: disk quota exceeded":                              "disk quota exceeded",
		"open /b/x: read-only file system":                                  "the file system is read-only",
		"connection reset by peer":                                          "",
		"":                                                                  "",
	} {
		err := FromMessage(msg)
		if err.Error() != msg || Describe(err) != want || Is(err) != (want != "") {
			t.Errorf("FromMessage(%q): text %q, Describe %q (want %q), Is %v", msg, err.Error(), Describe(err), want, Is(err))
		}
	}
}
