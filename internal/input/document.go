package input

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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
	errs   []*LineError
	pi, ei int
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
			d.errs = append(d.errs, &LineError{File: name, Line: line, Err: err})
			return
		}
		p.File, p.Line = name, line
		d.papers = append(d.papers, p)
	}
	var errs []*LineError
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
	for _, e := range errs {
		e.File = name
		d.errs = append(d.errs, e)
	}
	return d, nil
}

// Next returns the entries in order, then the malformed ones as *LineError, then io.EOF.
func (d *document) Next() (Paper, error) {
	if d.pi < len(d.papers) {
		d.pi++
		return d.papers[d.pi-1], nil
	}
	if d.ei < len(d.errs) {
		d.ei++
		return Paper{}, d.errs[d.ei-1]
	}
	return Paper{}, io.EOF
}
