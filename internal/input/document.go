package input

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
)

// MaxDocumentBytes bounds a BibTeX, RIS or CSL-JSON input, which is parsed as a whole (unlike
// line formats, which are streamed).
const MaxDocumentBytes = 64 << 20

// source yields the entries of one input.
type source interface {
	Next() (Paper, error)
}

// openSource returns the reader of one input: a document format (BibTeX, RIS, CSL-JSON) chosen
// by --format, by the file's extension, or by its first bytes ("@" after any "%" comment lines,
// "TY  -", "["); otherwise the line reader.
func openSource(r io.Reader, name string, opts Options) (source, error) {
	opts = opts.withDefaults()
	br := bufio.NewReaderSize(r, 64<<10)
	format := opts.Format
	switch format {
	case FormatAuto:
		format = documentFormat(name, br)
	case FormatJSONL:
		// --format json on a JSON array: no line of JSON Lines is an array, a CSL-JSON file is.
		if head, _ := br.Peek(4096); bytes.HasPrefix(bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\ufeff")), " \t\r\n"), []byte("[")) {
			format = FormatCSLJSON
		}
	}
	switch format {
	case FormatBibTeX, FormatRIS, FormatCSLJSON:
		return readDocument(br, name, format, opts)
	}
	return NewReader(br, name, opts), nil
}

// documentFormat guesses a document format from the name and the first bytes; FormatAuto
// when the input is not a document.
func documentFormat(name string, br *bufio.Reader) Format {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".bib", ".bibtex":
		return FormatBibTeX
	case ".ris":
		return FormatRIS
	}
	head, _ := br.Peek(4096)
	head = bytes.TrimPrefix(head, []byte("\ufeff"))
	head = bytes.TrimLeft(head, " \t\r\n")
	// BibTeX files often start with "%" comment lines (JabRef: "% Encoding: UTF-8").
	body := head
	for bytes.HasPrefix(body, []byte("%")) {
		nl := bytes.IndexByte(body, '\n')
		if nl < 0 {
			break
		}
		body = bytes.TrimLeft(body[nl+1:], " \t\r\n")
	}
	if bytes.HasPrefix(body, []byte("@")) {
		return FormatBibTeX
	}
	switch {
	case bytes.HasPrefix(head, []byte("[")):
		return FormatCSLJSON
	case bytes.HasPrefix(head, []byte("TY  -")):
		return FormatRIS
	}
	return FormatAuto
}

// document is a parsed document input, handed out entry by entry.
type document struct {
	name   string
	papers []Paper
	errs   errList
	pi, ei int
}

// maxDocumentErrors bounds the malformed entries of a document input that are kept with their
// description; the others keep their line only (4 bytes), so that a file of millions of
// malformed lines is held in about twice its size rather than a hundred times.
const maxDocumentErrors = 1000

// errMalformed describes a malformed entry beyond the first maxDocumentErrors of a document.
var errMalformed = fmt.Errorf("malformed entry (only the first %d of a file are described)", maxDocumentErrors)

// errList is the malformed entries of a document, in order: the first maxDocumentErrors in
// full, the lines of the others.
type errList struct {
	errs []*LineError
	more []int32
}

// oneError is an errList of one error.
func oneError(line int, err error) *errList {
	l := &errList{}
	l.add(line, err)
	return l
}

// add appends the malformed entry of the line line.
func (l *errList) add(line int, err error) {
	if len(l.errs) < maxDocumentErrors {
		l.errs = append(l.errs, &LineError{Line: line, Err: err})
		return
	}
	l.more = append(l.more, int32(min(line, math.MaxInt32)))
}

// len is the number of malformed entries.
func (l *errList) len() int { return len(l.errs) + len(l.more) }

// at returns the i-th malformed entry (File unset).
func (l *errList) at(i int) *LineError {
	if i < len(l.errs) {
		return l.errs[i]
	}
	return &LineError{Line: int(l.more[i-len(l.errs)]), Err: errMalformed}
}

// readDocument parses a whole document input (at most MaxDocumentBytes).
func readDocument(r io.Reader, name string, format Format, opts Options) (*document, error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(raw) > MaxDocumentBytes {
		return nil, fmt.Errorf("%s: a %s input may hold at most %d MiB", name, format, MaxDocumentBytes>>20)
	}
	src := strings.TrimPrefix(string(raw), "\ufeff")
	d := &document{name: name}
	add := func(e entry, line int) {
		p, err := finishEntry(opts, e)
		if err != nil {
			d.errs.add(line, err)
			return
		}
		p.File, p.Line = name, line
		d.papers = append(d.papers, p)
	}
	var errs *errList
	switch format {
	case FormatBibTeX:
		var entries []bibEntry
		entries, errs = parseBibTeX(src)
		for _, b := range entries {
			add(bibToEntry(b), b.line)
		}
	case FormatRIS:
		var recs []risRecord
		recs, errs = parseRIS(src)
		for _, r := range recs {
			add(risToEntry(r), r.line)
		}
	case FormatCSLJSON:
		var entries []entry
		var lines []int
		entries, lines, errs = parseCSLJSON(src)
		for i, e := range entries {
			add(e, lines[i])
		}
	default:
		return nil, errors.New("not a document format")
	}
	for i := range errs.len() {
		e := errs.at(i)
		d.errs.add(e.Line, e.Err)
	}
	return d, nil
}

// Next returns the entries in order, then the malformed ones as *LineError, then io.EOF.
func (d *document) Next() (Paper, error) {
	if d.pi < len(d.papers) {
		d.pi++
		return d.papers[d.pi-1], nil
	}
	if d.ei < d.errs.len() {
		e := d.errs.at(d.ei)
		d.ei++
		e.File = d.name
		return Paper{}, e
	}
	return Paper{}, io.EOF
}
