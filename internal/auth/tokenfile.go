package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// TokenFile is a TokenSet loaded from a file and replaced when the file's content changes
// (Reload, called by the server's reload loop on a timer and on SIGHUP). A reload that fails
// keeps the previous set.
type TokenFile struct {
	path string
	cur  atomic.Pointer[TokenSet]

	mu   sync.Mutex // serialises Reload; guards last
	last []byte
}

// LoadTokenFile reads the tokens of path. A file without any token is an error: it would lock
// every caller out, which is never what an operator means.
func LoadTokenFile(path string) (*TokenFile, error) {
	f := &TokenFile{path: path}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *TokenFile) Path() string { return f.path }

// String describes the file for logs.
func (f *TokenFile) String() string { return "token file " + f.path }

// Tokens returns the current set.
func (f *TokenFile) Tokens() *TokenSet { return f.cur.Load() }

// FetcherIDs returns the fetcher ids token may use (nil: any) and whether it is in the
// current set.
func (f *TokenFile) FetcherIDs(token string) (*FetcherIDs, bool) {
	return f.cur.Load().FetcherIDs(token)
}

// Contains reports whether token is in the current set.
func (f *TokenFile) Contains(token string) bool { return f.cur.Load().Contains(token) }

// Reload re-reads the file and swaps the set in when the content changed. It reports whether
// it did.
func (f *TokenFile) Reload() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.path)
	if err != nil {
		return false, fmt.Errorf("read token file: %w", err)
	}
	if f.last != nil && bytes.Equal(data, f.last) {
		return false, nil
	}
	set, err := ParseTokens(bytes.NewReader(data))
	if err != nil {
		return false, fmt.Errorf("token file %s: %w", f.path, err)
	}
	if set.Len() == 0 {
		return false, fmt.Errorf("token file %s: %w", f.path, ErrNoTokens)
	}
	f.cur.Store(set)
	f.last = data
	return true, nil
}

// ErrNoTokens is returned for a token file that holds no token.
var ErrNoTokens = errors.New("no tokens (one per line; # starts a comment)")
