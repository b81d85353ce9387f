package input

import (
	"strings"
)

// ArgsName is the input name of the papers given on the command line as arguments (URLs,
// arXiv ids), as it appears in error messages ("(arguments):2: ...").
const ArgsName = "(arguments)"

// ArgKind is what a command-line argument of `paperfetch get` is.
type ArgKind int

const (
	// ArgFile is an input file.
	ArgFile ArgKind = iota
	// ArgStdin is "-": standard input.
	ArgStdin
	// ArgPaper is a paper itself: an http(s) URL, an arXiv id or a DOI.
	ArgPaper
)

// ClassifyArg says whether a command-line argument is standard input, a paper (an http(s) URL,
// possibly quoted or in <...>, an arXiv id, or a DOI: 10.1234/x, doi:10.1234/x) or otherwise an
// input file. It looks only at the
// argument's syntax; the caller checks that a file exists (a file named like an arXiv id is
// still a file when it exists: exists reports that).
func ClassifyArg(arg string, exists func(string) bool) ArgKind {
	if arg == "-" {
		return ArgStdin
	}
	if exists != nil && exists(arg) {
		return ArgFile
	}
	s := Unwrap(arg)
	if _, ok := ArxivID(s); ok {
		return ArgPaper
	}
	if meantAsDOI(s) {
		return ArgPaper // resolved like a DOI line
	}
	if lower := strings.ToLower(s); strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://") {
		return ArgPaper
	}
	return ArgFile
}

// Unwrap removes what often surrounds a URL or an id copied from a document, a mail or a
// spreadsheet: spaces, matching quotes ("...", '...') and angle brackets (<...>).
func Unwrap(s string) string {
	s = strings.TrimSpace(s)
	for len(s) >= 2 {
		first, last := s[0], s[len(s)-1]
		if (first == '"' && last == '"') || (first == '\'' && last == '\'') || (first == '<' && last == '>') {
			s = strings.TrimSpace(s[1 : len(s)-1])
			continue
		}
		break
	}
	return s
}

// WithArgs makes the stream read lines (papers given as command-line arguments) for the input
// named ArgsName.
func (s *Stream) WithArgs(lines []string) *Stream {
	s.args = strings.Join(lines, "\n") + "\n"
	return s
}
