package input

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"strings"
)

// Stream reads several inputs in order (a name of "-" is standard input) and drops duplicate
// papers: an id repeated with the same URLs, checksum and metadata is skipped silently (and
// counted), one repeated with different content is reported as a *LineError and skipped (the
// first occurrence wins). Remembering the ids costs 16 bytes per distinct paper (64-bit hashes),
// about 40 MB for a million papers; everything else is streamed.
type Stream struct {
	names []string
	opts  Options
	stdin io.Reader

	idx    int
	cur    source
	closer io.Closer

	args string // the lines of the input named ArgsName (WithArgs)

	seed       maphash.Seed
	seen       map[uint64]uint64 // hash(id) -> hash(content)
	duplicates int
}

// NewStream returns a Stream over the named inputs; stdin is read for "-".
func NewStream(names []string, stdin io.Reader, opts Options) *Stream {
	return &Stream{names: names, opts: opts, stdin: stdin, seed: maphash.MakeSeed(), seen: map[uint64]uint64{}}
}

// Next returns the next distinct paper. A malformed or conflicting entry is a *LineError:
// report it and call Next again. io.EOF after the last input; other errors (an input that cannot
// be opened or read) are fatal.
func (s *Stream) Next() (Paper, error) {
	for {
		if s.cur == nil {
			if s.idx >= len(s.names) {
				return Paper{}, io.EOF
			}
			name := s.names[s.idx]
			s.idx++
			var r io.Reader
			if name == ArgsName && s.args != "" {
				r = strings.NewReader(s.args)
			} else if name == "-" {
				if s.stdin == nil {
					return Paper{}, errors.New("standard input is not available")
				}
				r = s.stdin
			} else {
				f, err := os.Open(name)
				if err != nil {
					return Paper{}, fmt.Errorf("open input: %w", err)
				}
				if st, err := f.Stat(); err == nil && st.IsDir() {
					_ = f.Close()
					return Paper{}, fmt.Errorf("input %s is a directory", name)
				}
				r, s.closer = f, f
			}
			src, err := openSource(r, name, s.opts)
			if err != nil {
				_ = s.closeCurrent()
				return Paper{}, err
			}
			s.cur = src
		}
		p, err := s.cur.Next()
		if errors.Is(err, io.EOF) {
			if err := s.closeCurrent(); err != nil {
				return Paper{}, err
			}
			continue
		}
		if err != nil {
			return Paper{}, err
		}
		idh := maphash.String(s.seed, p.ID)
		ch := s.contentHash(p)
		if prev, dup := s.seen[idh]; dup {
			if prev == ch {
				s.duplicates++
				continue
			}
			return Paper{}, &LineError{File: p.File, Line: p.Line, Err: fmt.Errorf("paper id %q was given before with different URLs, checksum or metadata; keeping the first", short(p.ID))}
		}
		s.seen[idh] = ch
		return p, nil
	}
}

// Duplicates is the number of identical repeated entries skipped so far.
func (s *Stream) Duplicates() int { return s.duplicates }

// Close closes the input being read, if any.
func (s *Stream) Close() error { return s.closeCurrent() }

func (s *Stream) closeCurrent() error {
	s.cur = nil
	if s.closer == nil {
		return nil
	}
	c := s.closer
	s.closer = nil
	if err := c.Close(); err != nil {
		return fmt.Errorf("close input: %w", err)
	}
	return nil
}

// contentHash hashes what makes two entries with the same id the same paper.
func (s *Stream) contentHash(p Paper) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	for _, u := range p.URLs {
		h.WriteString(u)
		h.WriteByte(0)
	}
	h.WriteString(p.DOI)
	h.WriteByte(1)
	h.WriteByte(1)
	h.WriteString(p.SHA256)
	h.WriteByte(1)
	for _, k := range sortedKeys(p.Metadata) {
		h.WriteString(k)
		h.WriteByte(0)
		h.WriteString(p.Metadata[k])
		h.WriteByte(0)
	}
	return h.Sum64()
}
