package input

import (
	"fmt"
	"strings"
)

// normalizeURL prepares a URL given by the user: quotes and <...> removed, and the fragment
// ("#page=3") dropped, since it is never sent to the server and would make the same PDF a
// second paper.
func normalizeURL(raw string) string {
	s := Unwrap(raw)
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i]
	}
	return s
}

// unsupportedFormat recognises, from the first entry of an input read as lines, files in a
// format paperfetch does not read (BibTeX, RIS and CSL-JSON are read: see documentFormat), so
// that one message names the format instead of an error for every line. It returns the
// format's name, or "".
func unsupportedFormat(first string) string {
	lower := strings.ToLower(first)
	switch {
	case strings.HasPrefix(lower, "<?xml"):
		return "XML (an EndNote or MODS export?)"
	case strings.HasPrefix(lower, "<!doctype") || strings.HasPrefix(lower, "<html"):
		return "an HTML page"
	case strings.HasPrefix(first, "%PDF-"):
		return "a PDF"
	case strings.HasPrefix(first, "%0 "):
		return "EndNote (refer)"
	}
	return ""
}

// unsupportedFormatError is the fatal error of an input in an unsupported format.
func unsupportedFormatError(name, format string) error {
	return fmt.Errorf("%s looks like %s, which paperfetch does not read yet; give one URL, arXiv id or DOI per line, JSON Lines, CSV, BibTeX, RIS or CSL-JSON", name, format)
}

// csvDelimiter returns the delimiter of a CSV header line: ';' when the line has semicolons
// and no commas (spreadsheets in many locales export so), else ','.
func csvDelimiter(header string) rune {
	if strings.Contains(header, ";") && !strings.Contains(header, ",") {
		return ';'
	}
	return ','
}
