package input

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode"
)

// formatMixed is what FormatAuto resolves to for a non-CSV input: each line is a URL, an arXiv
// id or a JSON object.
const formatMixed Format = -1

// Reader parses one input stream entry by entry, in bounded memory.
type Reader struct {
	name string
	opts Options
	br   *bufio.Reader
	line int    // number of the last line read by readLine
	mode Format // resolved format; FormatAuto until the first entry is seen
	eof  bool

	csv     *csv.Reader
	csvBase int // line number of the CSV header, added to the csv reader's line numbers
	csvCols csvColumns
}

// NewReader returns a Reader of r; name is used in error messages ("-" for standard input).
func NewReader(r io.Reader, name string, opts Options) *Reader {
	opts = opts.withDefaults()
	return &Reader{name: name, opts: opts, br: bufio.NewReaderSize(r, 64<<10), mode: opts.Format}
}

// Next returns the next entry. A malformed entry is returned as a *LineError: report it and call
// Next again. At the end of the input Next returns io.EOF; any other error (failing to read the
// input, a bad CSV header) is fatal.
func (r *Reader) Next() (Paper, error) {
	if r.csv != nil {
		return r.nextCSV()
	}
	for {
		text, lineNo, err := r.readLine()
		if err != nil {
			return Paper{}, err
		}
		text = strings.TrimSpace(text)
		if lineNo == 1 {
			text = strings.TrimPrefix(text, "\ufeff") // a UTF-8 byte order mark
		}
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if r.mode == FormatAuto {
			r.mode = formatMixed
			if f := unsupportedFormat(text); f != "" {
				return Paper{}, unsupportedFormatError(r.name, f)
			}
			if !strings.HasPrefix(text, "{") && looksLikeCSVHeader(text) {
				r.mode = FormatCSV
			}
		}
		if r.mode == FormatCSV {
			if err := r.startCSV(text, lineNo); err != nil {
				return Paper{}, err
			}
			return r.nextCSV()
		}
		p, err := r.parseLine(text)
		if err != nil {
			return Paper{}, &LineError{File: r.name, Line: lineNo, Err: err}
		}
		p.File, p.Line = r.name, lineNo
		return p, nil
	}
}

// errLineTooLong marks a line over the length limit.
var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its terminator, and its number. Over-long lines are
// consumed and returned as a *LineError. io.EOF once the input is exhausted.
func (r *Reader) readLine() (string, int, error) {
	if r.eof {
		return "", r.line, io.EOF
	}
	var buf []byte
	tooLong := false
	for {
		chunk, err := r.br.ReadSlice('\n')
		if !tooLong {
			switch {
			case len(buf)+len(chunk) > r.opts.MaxLineBytes+2:
				tooLong, buf = true, nil
			case len(buf) == 0 && !errors.Is(err, bufio.ErrBufferFull):
				// The whole line is in br's buffer, valid until the next read: the string
				// returned below is its only copy.
				buf = chunk
			default:
				buf = append(buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return "", r.line, fmt.Errorf("read %s: %w", r.name, err)
		}
		if errors.Is(err, io.EOF) {
			r.eof = true
			if len(chunk) == 0 && len(buf) == 0 && !tooLong {
				return "", r.line, io.EOF
			}
		}
		r.line++
		if tooLong {
			return "", r.line, &LineError{File: r.name, Line: r.line, Err: fmt.Errorf("%w (more than %d bytes)", errLineTooLong, r.opts.MaxLineBytes)}
		}
		buf = bytes.TrimSuffix(buf, []byte{'\n'})
		buf = bytes.TrimSuffix(buf, []byte{'\r'})
		return string(buf), r.line, nil
	}
}

// parseLine parses one non-blank, non-comment line in lines, jsonl or mixed mode.
func (r *Reader) parseLine(text string) (Paper, error) {
	if strings.HasPrefix(text, "{") {
		if r.mode == FormatLines {
			return Paper{}, errors.New("a JSON object in a lines input (use --format jsonl or auto)")
		}
		return r.parseJSON(text)
	}
	if r.mode == FormatJSONL {
		return Paper{}, fmt.Errorf("not a JSON object: %q", short(text))
	}
	text = Unwrap(text)
	// More than one field (strings.Fields, split only on that rare path).
	if hasSpace(strings.TrimSpace(text)) {
		fields := strings.Fields(text)
		if _, ok := ArxivID(fields[0]); ok || strings.Contains(fields[0], "://") {
			return Paper{}, fmt.Errorf("one URL or arXiv id per line expected, got %q", short(text))
		}
		return Paper{}, fmt.Errorf("not a URL, arXiv id or JSON object: %q", short(text))
	}
	if id, ok := ArxivID(text); ok {
		return Paper{ID: id, URLs: []string{ArxivURL(r.opts.ArxivBase, id)}}, nil
	}
	if len(text) > 6 && strings.EqualFold(text[:6], "arxiv:") {
		return Paper{}, fmt.Errorf("malformed arXiv id %q", short(text))
	}
	if meantAsDOI(text) {
		return finishEntry(r.opts, entry{doi: text})
	}
	if strings.Contains(text, "://") {
		return finishEntry(r.opts, entry{urls: []string{text}, urlLine: true})
	}
	return Paper{}, fmt.Errorf("not a URL, arXiv id or JSON object: %q", short(text))
}

// jsonEntry is the shape of a JSON Lines entry.
type jsonEntry struct {
	ID       string            `json:"id"`
	PaperID  string            `json:"paper_id"`
	URL      string            `json:"url"`
	URLs     []string          `json:"urls"`
	SHA256   string            `json:"sha256"`
	Arxiv    string            `json:"arxiv"`
	DOI      string            `json:"doi"`
	Metadata map[string]string `json:"metadata"`
}

// knownJSONField reports whether k is a field of jsonEntry; other fields become metadata.
func knownJSONField(k string) bool {
	switch k {
	case "id", "paper_id", "url", "urls", "sha256", "arxiv", "doi", "metadata":
		return true
	}
	return false
}

// parseJSON parses a JSON object line.
func (r *Reader) parseJSON(text string) (Paper, error) {
	var e jsonEntry
	dec := json.NewDecoder(strings.NewReader(text))
	if err := dec.Decode(&e); err != nil {
		return Paper{}, fmt.Errorf("bad JSON: %w", err)
	}
	if dec.More() {
		return Paper{}, errors.New("bad JSON: more than one value on the line")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &raw); err != nil {
		return Paper{}, fmt.Errorf("bad JSON: %w", err)
	}
	if p, ok, err := fromPaperRecord(r.opts, raw); ok {
		return p, err
	}
	md := e.Metadata
	for k, v := range raw {
		if knownJSONField(k) {
			continue
		}
		if md == nil {
			md = map[string]string{}
		}
		var s string
		if json.Unmarshal(v, &s) == nil {
			md[k] = s
		} else {
			var compact bytes.Buffer
			if err := json.Compact(&compact, v); err != nil {
				return Paper{}, fmt.Errorf("bad JSON field %q: %w", k, err)
			}
			md[k] = compact.String()
		}
	}
	id := e.ID
	if id == "" {
		id = e.PaperID
	}
	var urls []string
	if e.URL != "" {
		urls = append(urls, e.URL)
	}
	urls = append(urls, e.URLs...)
	return finishEntry(r.opts, entry{id: id, urls: urls, sha: e.SHA256, md: md, doi: e.DOI, arxiv: e.Arxiv})
}

// csvColumns maps a CSV header to the roles of its columns.
type csvColumns struct {
	id, url, urls, sha int // column index, or -1
	doi                int // column index, or -1
	meta               []int
	names              []string
}

// columnRole returns the role of a CSV column name (lower case): "id", "url", "urls", "sha",
// or "" for a metadata column.
func columnRole(name string) string {
	switch name {
	case "id", "paper_id", "paperid", "arxiv", "arxiv_id", "key", "citation_key", "citation key", "citationkey":
		return "id"
	case "url", "pdf_url", "pdf", "link":
		return "url"
	case "urls":
		return "urls"
	case "sha256", "sha-256", "checksum":
		return "sha"
	case "doi":
		return "doi"
	}
	return ""
}

// looksLikeCSVHeader reports whether a first line is a CSV header: comma-separated names, one
// of which is an id or url column, and no URL in it.
func looksLikeCSVHeader(text string) bool {
	if !strings.ContainsAny(text, ",;") || strings.Contains(text, "://") {
		return false
	}
	cr := csv.NewReader(strings.NewReader(text))
	cr.Comma = csvDelimiter(text)
	fields, err := cr.Read()
	if err != nil {
		return false
	}
	for _, f := range fields {
		if role := columnRole(strings.ToLower(strings.TrimSpace(f))); role == "id" || role == "url" || role == "urls" || role == "doi" {
			return true
		}
	}
	return false
}

// startCSV parses the header line and switches the reader to CSV records.
func (r *Reader) startCSV(header string, lineNo int) error {
	hr := csv.NewReader(strings.NewReader(header))
	hr.Comma = csvDelimiter(header)
	fields, err := hr.Read()
	if err != nil {
		return fmt.Errorf("%s:%d: bad CSV header: %w", r.name, lineNo, err)
	}
	cols := csvColumns{id: -1, url: -1, urls: -1, sha: -1, doi: -1}
	seen := map[string]bool{}
	for i, f := range fields {
		name := strings.TrimSpace(f)
		lower := strings.ToLower(name)
		if name == "" {
			return fmt.Errorf("%s:%d: bad CSV header: column %d has no name", r.name, lineNo, i+1)
		}
		if seen[lower] {
			return fmt.Errorf("%s:%d: bad CSV header: column %q appears twice", r.name, lineNo, name)
		}
		seen[lower] = true
		target := &cols.id
		switch columnRole(lower) {
		case "id":
		case "url":
			target = &cols.url
		case "urls":
			target = &cols.urls
		case "sha":
			target = &cols.sha
		case "doi":
			target = &cols.doi
		default:
			cols.meta = append(cols.meta, i)
			cols.names = append(cols.names, name)
			continue
		}
		if *target >= 0 { // a second alias of the same role is metadata
			cols.meta = append(cols.meta, i)
			cols.names = append(cols.names, name)
			continue
		}
		*target = i
	}
	if cols.id < 0 && cols.url < 0 && cols.urls < 0 && cols.doi < 0 {
		return fmt.Errorf("%s:%d: CSV header %q has no id, url or doi column", r.name, lineNo, short(header))
	}
	c := csv.NewReader(r.br)
	c.Comma = hr.Comma
	c.FieldsPerRecord = -1
	c.Comment = '#'
	c.TrimLeadingSpace = true
	c.ReuseRecord = true
	r.csv, r.csvBase, r.csvCols = c, lineNo, cols
	return nil
}

// nextCSV returns the next CSV record as a Paper.
func (r *Reader) nextCSV() (Paper, error) {
	for {
		rec, err := r.csv.Read()
		if errors.Is(err, io.EOF) {
			return Paper{}, io.EOF
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return Paper{}, &LineError{File: r.name, Line: r.csvBase + pe.Line, Err: fmt.Errorf("bad CSV: %w", pe.Err)}
			}
			return Paper{}, fmt.Errorf("read %s: %w", r.name, err)
		}
		line, _ := r.csv.FieldPos(0)
		line += r.csvBase
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		p, err := r.csvRecord(rec)
		if err != nil {
			return Paper{}, &LineError{File: r.name, Line: line, Err: err}
		}
		p.File, p.Line = r.name, line
		return p, nil
	}
}

// csvRecord converts one CSV record.
func (r *Reader) csvRecord(rec []string) (Paper, error) {
	c := r.csvCols
	get := func(i int) string {
		if i < 0 || i >= len(rec) {
			return ""
		}
		return strings.TrimSpace(rec[i])
	}
	var urls []string
	if u := get(c.url); u != "" {
		urls = append(urls, u)
	}
	if us := get(c.urls); us != "" {
		urls = append(urls, strings.FieldsFunc(us, func(r rune) bool { return r == ' ' || r == '|' || r == ';' || r == '\t' })...)
	}
	var md map[string]string
	for j, i := range c.meta {
		if v := get(i); v != "" {
			if md == nil {
				md = map[string]string{}
			}
			md[c.names[j]] = v
		}
	}
	e := entry{id: get(c.id), urls: urls, sha: get(c.sha), md: md, doi: get(c.doi)}
	bibFromMetadata(&e)
	return finishEntry(r.opts, e)
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// hasSpace reports whether s holds a white-space character (unicode.IsSpace), testing ASCII
// bytes without decoding them.
func hasSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 0x80:
			return strings.IndexFunc(s[i:], unicode.IsSpace) >= 0
		case c == ' ' || '\t' <= c && c <= '\r':
			return true
		}
	}
	return false
}
