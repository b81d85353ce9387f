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
