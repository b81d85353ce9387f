// Package auth authenticates callers of the paperfetch gRPC services: bearer tokens from token
// files (compared in constant time, reloaded when the file changes) and verified TLS client
// certificates, with a per-service Guard that says which of them each service accepts.
package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"strings"
)

// TokenSet is an immutable set of accepted bearer tokens. Tokens are kept only as SHA-256
// digests and compared in constant time, so neither timing nor a memory dump of the set
// reveals them.
type TokenSet struct {
	digests [][sha256.Size]byte
	ids     []*FetcherIDs // per token: the fetcher ids it may use (nil: any); see fetcherids.go
}

// ParseTokens reads tokens, one per line. Blank lines and lines starting with # are
// ignored; surrounding white space is trimmed. A token may not contain white space; it may be
// followed by `fetcher-ids=ID[,ID...]` (see fetcherids.go).
func ParseTokens(r io.Reader) (*TokenSet, error) {
	s := &TokenSet{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		fields := strings.Fields(t)
		ids, err := parseTokenOptions(fields[1:])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		s.digests = append(s.digests, sha256.Sum256([]byte(fields[0])))
		s.ids = append(s.ids, ids)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	return s, nil
}

// NewTokenSet returns a set of the given tokens (for tests and programmatic use).
func NewTokenSet(tokens ...string) *TokenSet {
	var b bytes.Buffer
	for _, t := range tokens {
		b.WriteString(t)
		b.WriteByte('\n')
	}
	s, err := ParseTokens(&b)
	if err != nil {
		// Only white space inside a token fails; keep the valid ones.
		s = &TokenSet{}
		for _, t := range tokens {
			s.digests = append(s.digests, sha256.Sum256([]byte(t)))
			s.ids = append(s.ids, nil)
		}
	}
	return s
}

// Len returns the number of tokens.
func (s *TokenSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.digests)
}

// Contains reports whether token is in the set. It takes the same time whichever token
// matches, and whether one does.
func (s *TokenSet) Contains(token string) bool {
	if s == nil || token == "" {
		return false
	}
	d := sha256.Sum256([]byte(token))
	found := 0
	for i := range s.digests {
		found |= subtle.ConstantTimeCompare(d[:], s.digests[i][:])
	}
	return found == 1
}

// FetcherIDs returns the fetcher ids token may use (nil: any) and whether token is in the set,
// in the same constant time as Contains.
func (s *TokenSet) FetcherIDs(token string) (*FetcherIDs, bool) {
	if s == nil || token == "" {
		return nil, false
	}
	d := sha256.Sum256([]byte(token))
	match := -1
	for i := range s.digests {
		eq := subtle.ConstantTimeCompare(d[:], s.digests[i][:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return nil, false
	}
	return s.ids[match], true
}
