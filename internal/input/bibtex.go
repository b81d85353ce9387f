package input

import (
	"fmt"
	"strings"
	"unicode"
)

// BibTeX: no kept Go BibTeX parser is available from the module proxy (the usual ones are not
// served), so this is a small parser of the grammar BibTeX itself reads: entries
// `@type{key, field = value, ...}` (or with parentheses), values in braces or double quotes
// (nested braces kept as one value), numbers, macro names, and `#` concatenation; `@string`
// macros and the standard month macros; `@comment` and `@preamble` skipped, as is text between
// entries and "%" comments (lines between entries, and to the end of the line between the
// tokens of an entry, as biber reads them); field names and entry types case-insensitive. Values are cleaned of braces and the
// common LaTeX accents and escapes.

// bibMonths are BibTeX's predefined month macros.
var bibMonths = map[string]string{
	"jan": "January", "feb": "February", "mar": "March", "apr": "April", "may": "May", "jun": "June",
	"jul": "July", "aug": "August", "sep": "September", "oct": "October", "nov": "November", "dec": "December",
}

// bibEntry is one parsed BibTeX entry.
type bibEntry struct {
	typ, key string
	fields   map[string]string
	line     int
}

// bibParser parses a whole BibTeX document held in memory.
type bibParser struct {
	src    string
	pos    int
	line   int
	macros map[string]string
	joined int // bytes of the values joined with "#" so far (at most MaxDocumentBytes)
}

// maxJoinedValueBytes bounds a value joined from parts with "#": macros that double a value
// ("@string{m = m # m}" repeated) would otherwise grow it exponentially from a few bytes of
// input. All the joined values of a document together may hold at most MaxDocumentBytes.
const maxJoinedValueBytes = 1 << 20

// parseBibTeX returns the entries of a BibTeX document and the errors of malformed ones (each
// with its line); a malformed entry is skipped up to the next "@" at the start of a line.
func parseBibTeX(src string) ([]bibEntry, *errList) {
	p := &bibParser{src: src, line: 1, macros: map[string]string{}}
	for k, v := range bibMonths {
		p.macros[k] = v
	}
	var out []bibEntry
	errs := &errList{}
	for {
		if !p.nextEntry() {
			return out, errs
		}
		start := p.line
		e, err := p.entry()
		if err != nil {
			errs.add(start, fmt.Errorf("bad BibTeX entry: %w", err))
			p.recover()
			continue
		}
		if e != nil {
			e.line = start
			out = append(out, *e)
		}
	}
}

func (p *bibParser) eof() bool { return p.pos >= len(p.src) }

func (p *bibParser) advance() byte {
	c := p.src[p.pos]
	p.pos++
	if c == '\n' {
		p.line++
	}
	return c
}

// nextEntry moves past the next "@" outside comment lines (lines whose first non-blank
// character is "%", which may hold an address); false at the end.
func (p *bibParser) nextEntry() bool {
	lineStart := true
	for !p.eof() {
		c := p.advance()
		switch {
		case c == '\n':
			lineStart = true
		case c == ' ' || c == '\t' || c == '\r':
		case c == '%' && lineStart:
			p.skipLine()
			lineStart = true
		case c == '@':
			return true
		default:
			lineStart = false
		}
	}
	return false
}

// skipLine moves past the end of the current line.
func (p *bibParser) skipLine() {
	for !p.eof() && p.advance() != '\n' {
	}
}

// recover skips to the next line that starts (after blanks) with "@".
func (p *bibParser) recover() {
	for !p.eof() {
		if p.advance() != '\n' {
			continue
		}
		rest := strings.TrimLeft(p.src[p.pos:], " \t")
		if strings.HasPrefix(rest, "@") {
			return
		}
	}
}

// skipSpace skips white space and "%" comments (to the end of the line) between the tokens
// of an entry, as biber and JabRef read them.
func (p *bibParser) skipSpace() {
	for !p.eof() {
		switch p.src[p.pos] {
		case ' ', '\t', '\r', '\n', '\f', '\v':
			p.advance()
		case '%':
			p.skipLine()
		default:
			return
		}
	}
}

func isBibIdent(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`{}(),="#%'@`, rune(c)) || c >= 0x80
}

func (p *bibParser) ident() string {
	start := p.pos
	for !p.eof() && isBibIdent(p.src[p.pos]) {
		p.advance()
	}
	return p.src[start:p.pos]
}

func (p *bibParser) expect(c byte) error {
	p.skipSpace()
	if p.eof() {
		return fmt.Errorf("unexpected end of input, want %q", c)
	}
	if p.src[p.pos] != c {
		return fmt.Errorf("line %d: want %q, found %q", p.line, c, p.src[p.pos])
	}
	p.advance()
	return nil
}

// entry parses what follows an "@"; nil for @comment, @preamble and @string.
func (p *bibParser) entry() (*bibEntry, error) {
	p.skipSpace()
	typ := strings.ToLower(p.ident())
	if typ == "" {
		return nil, fmt.Errorf("line %d: no entry type after @", p.line)
	}
	p.skipSpace()
	if p.eof() {
		return nil, fmt.Errorf("unexpected end of input after @%s", typ)
	}
	open := p.src[p.pos]
	if open != '{' && open != '(' {
		if typ == "comment" { // "@comment rest of line" is a comment too
			return nil, nil
		}
		return nil, fmt.Errorf("line %d: want { or ( after @%s", p.line, typ)
	}
	closing := byte('}')
	if open == '(' {
		closing = ')'
	}
	switch typ {
	case "comment", "preamble":
		_, err := p.braced(open, closing)
		return nil, err
	}
	p.advance()
	if typ == "string" {
		p.skipSpace()
		name := strings.ToLower(p.ident())
		if name == "" {
			return nil, fmt.Errorf("line %d: @string without a name", p.line)
		}
		if err := p.expect('='); err != nil {
			return nil, err
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.macros[name] = v
		return nil, p.expect(closing)
	}
	p.skipSpace()
	keyStart := p.pos
	for !p.eof() && p.src[p.pos] != ',' && p.src[p.pos] != closing && p.src[p.pos] != '\n' {
		p.advance()
	}
	e := &bibEntry{typ: typ, key: strings.TrimSpace(p.src[keyStart:p.pos]), fields: map[string]string{}}
	for {
		p.skipSpace()
		if p.eof() {
			return nil, fmt.Errorf("entry %q is not closed", e.key)
		}
		switch p.src[p.pos] {
		case closing:
			p.advance()
			return e, nil
		case ',':
			p.advance()
			continue
		}
		name := strings.ToLower(p.ident())
		if name == "" {
			return nil, fmt.Errorf("line %d: entry %q: want a field name, found %q", p.line, e.key, p.src[p.pos])
		}
		if err := p.expect('='); err != nil {
			return nil, fmt.Errorf("entry %q field %q: %w", e.key, name, err)
		}
		v, err := p.value()
		if err != nil {
			return nil, fmt.Errorf("entry %q field %q: %w", e.key, name, err)
		}
		e.fields[name] = v
	}
}

// value parses a field value: parts joined by "#". A value of one part is not copied; a
// joined one may hold at most maxJoinedValueBytes, and all of a document's together
// MaxDocumentBytes.
func (p *bibParser) value() (string, error) {
	var parts []string
	size := 0
	for {
		s, err := p.valuePart()
		if err != nil {
			return "", err
		}
		parts = append(parts, s)
		size += len(s)
		if len(parts) > 1 && (size > maxJoinedValueBytes || p.joined+size > MaxDocumentBytes) {
			return "", fmt.Errorf("line %d: a value joined with # is longer than %d bytes (or all of them than %d)", p.line, maxJoinedValueBytes, MaxDocumentBytes)
		}
		p.skipSpace()
		if p.eof() || p.src[p.pos] != '#' {
			break
		}
		p.advance()
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	p.joined += size
	return strings.Join(parts, ""), nil
}

// valuePart parses one part of a value: a braced or quoted text, a number or a macro name.
func (p *bibParser) valuePart() (string, error) {
	p.skipSpace()
	if p.eof() {
		return "", fmt.Errorf("unexpected end of input in a value")
	}
	switch c := p.src[p.pos]; {
	case c == '{':
		return p.braced('{', '}')
	case c == '"':
		return p.quoted()
	case c >= '0' && c <= '9':
		start := p.pos
		for !p.eof() && p.src[p.pos] >= '0' && p.src[p.pos] <= '9' {
			p.advance()
		}
		return p.src[start:p.pos], nil
	default:
		name := strings.ToLower(p.ident())
		if name == "" {
			return "", fmt.Errorf("line %d: want a value, found %q", p.line, c)
		}
		return p.macros[name], nil // an undefined macro is empty, as in BibTeX (with a warning)
	}
}

// braced returns the text between open and its matching closing delimiter (inner braces kept).
func (p *bibParser) braced(open, closing byte) (string, error) { return p.delimited(open, closing) }

// quoted returns the text of a "..." value (braces inside may hold quotes).
func (p *bibParser) quoted() (string, error) { return p.delimited('"', '"') }

// delimited returns the text from the current delimiter open to closing at brace depth 0;
// backslash escapes and nested braces are skipped over.
func (p *bibParser) delimited(open, closing byte) (string, error) {
	start := p.line
	p.advance() // open
	from := p.pos
	depth := 0
	for !p.eof() {
		c := p.advance()
		switch {
		case c == '\\' && !p.eof():
			p.advance()
		case c == '{':
			depth++
		case c == '}' && depth > 0:
			depth--
		case c == closing && depth == 0:
			return p.src[from : p.pos-1], nil
		}
	}
	return "", fmt.Errorf("%q opened on line %d is not closed", open, start)
}

// latexAccents maps accent commands to the combining character they put on a letter.
var latexAccents = map[byte]rune{
	'\'': '\u0301', '`': '\u0300', '^': '\u0302', '"': '\u0308', '~': '\u0303', '=': '\u0304',
	'.': '\u0307', 'u': '\u0306', 'v': '\u030c', 'H': '\u030b', 'c': '\u0327', 'k': '\u0328', 'r': '\u030a',
}

// latexSymbols are commands that stand for a letter.
var latexSymbols = map[string]string{
	"ss": "ß", "o": "ø", "O": "Ø", "aa": "å", "AA": "Å", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ",
	"l": "ł", "L": "Ł", "i": "ı", "j": "ȷ",
}

// cleanLaTeX turns a BibTeX value into plain text: accents become Unicode (composed when a
// precomposed letter exists), escapes (\&, \%, \_, \$, \#) their character, braces and other
// commands disappear, and runs of white space become one space.
func cleanLaTeX(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '{', '}':
			continue
		case '~':
			b.WriteByte(' ')
			continue
		case '\\':
		default:
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			break
		}
		n := s[i+1]
		if strings.IndexByte("&%_$#{}", n) >= 0 {
			b.WriteByte(n)
			i++
			continue
		}
		if mark, ok := latexAccents[n]; ok && (!isLetter(n) || i+2 < len(s) && !isLetter(s[i+2])) {
			// \'e, \'{e}, \' e, \v{s}: find the letter the accent applies to.
			j := i + 2
			for j < len(s) && (s[j] == '{' || s[j] == ' ') {
				j++
			}
			if j < len(s) && s[j] == '\\' && j+1 < len(s) && (s[j+1] == 'i' || s[j+1] == 'j') {
				j++ // \'{\i}: a dotless i takes the accent
			}
			if j < len(s) && isLetter(s[j]) {
				b.WriteString(compose(rune(s[j]), mark))
				i = j
				for i+1 < len(s) && s[i+1] == '}' {
					i++
				}
				continue
			}
		}
		j := i + 1
		for j < len(s) && isLetter(s[j]) {
			j++
		}
		if sym, ok := latexSymbols[s[i+1:j]]; ok {
			b.WriteString(sym)
		}
		i = j - 1
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// compose returns letter with a combining mark, precomposed for the common Latin letters.
func compose(letter, mark rune) string {
	if r, ok := precomposed[[2]rune{letter, mark}]; ok {
		return string(r)
	}
	return string([]rune{letter, mark})
}

// precomposed holds the precomposed forms of the accented letters BibTeX files use most.
var precomposed = func() map[[2]rune]rune {
	m := map[[2]rune]rune{}
	add := func(mark rune, pairs string) {
		rs := []rune(pairs)
		for i := 0; i+1 < len(rs); i += 2 {
			m[[2]rune{rs[i], mark}] = rs[i+1]
		}
	}
	add('\u0301', "aáeéiíoóuúyýAÁEÉIÍOÓUÚYÝcćnńsśzźCĆNŃSŚZŹ")
	add('\u0300', "aàeèiìoòuùAÀEÈIÌOÒUÙ")
	add('\u0302', "aâeêiîoôuûAÂEÊIÎOÔUÛ")
	add('\u0308', "aäeëiïoöuüyÿAÄEËIÏOÖUÜ")
	add('\u0303', "aãnñoõAÃNÑOÕ")
	add('\u030c', "cčsšzžrřeěCČSŠZŽRŘEĚ")
	add('\u0327', "cçCÇsşSŞ")
	add('\u030a', "aåAÅuů")
	add('\u030b', "oőuűOŐUŰ")
	m[[2]rune{'ı', '\u0301'}] = 'í'
	return m
}()

// bibToEntry converts a BibTeX entry: the citation key is the paper id; doi, url (and pdf,
// file links that are http URLs), eprint with archivePrefix (or eprinttype) arXiv, title, year
// (or date) and the first author.
func bibToEntry(b bibEntry) entry {
	f := func(name string) string { return cleanLaTeX(b.fields[name]) }
	e := entry{id: b.key, title: f("title"), author: bibFirstAuthor(b.fields["author"])}
	e.year = yearOf(f("year"))
	if e.year == "" {
		e.year = yearOf(f("date"))
	}
	if d := rawField(b.fields["doi"]); d != "" {
		e.doi = d
	}
	if u := rawField(b.fields["url"]); strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
		if !isDOIURL(u) {
			e.urls = append(e.urls, u)
		} else if e.doi == "" {
			e.doi = u
		}
	}
	prefix := strings.ToLower(f("archiveprefix"))
	if prefix == "" {
		prefix = strings.ToLower(f("eprinttype"))
	}
	if ep := rawField(b.fields["eprint"]); ep != "" && prefix == "arxiv" {
		e.arxiv = ep
	}
	return e
}

// bibFirstAuthor returns the family name of the first author of a BibTeX author list
// ("Family, Given and ..." or "Given Family and ..."); a name wholly in braces is a corporate
// author, kept whole ("{World Health Organization}").
func bibFirstAuthor(raw string) string {
	depth, first := 0, raw
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '{':
			depth++
		case '}':
			depth--
		case ' ', '\t', '\n':
			if depth == 0 && len(raw) >= i+5 && strings.EqualFold(raw[i:i+5], " and ") {
				first = raw[:i]
				i = len(raw)
			}
		}
	}
	first = strings.TrimSpace(first)
	if wholeGroup(first) {
		return cleanLaTeX(first)
	}
	return firstAuthor(cleanLaTeX(first))
}

// wholeGroup reports whether s is one brace group: "{" whose matching "}" ends s.
func wholeGroup(s string) bool {
	if len(s) < 2 || s[0] != '{' {
		return false
	}
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i == len(s)-1
			}
		}
	}
	return false
}

// rawField cleans an identifier-like value (a DOI or URL): braces and escapes removed, no
// other LaTeX interpretation, white space trimmed.
func rawField(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '{' || c == '}':
		case c == '\\' && i+1 < len(s) && strings.IndexByte("&%_$#{}~", s[i+1]) >= 0:
			b.WriteByte(s[i+1])
			i++
		case c == '\\' && strings.HasPrefix(s[i:], `\textasciitilde`):
			b.WriteByte('~')
			i += len(`\textasciitilde`) - 1
		default:
			b.WriteByte(c)
		}
	}
	return strings.TrimFunc(b.String(), unicode.IsSpace)
}
