// Package input parses the lists of papers that users give to paperfetch: one entry per line
// (an http(s) URL, an arXiv id, or a JSON object), or CSV with a header. Inputs are streamed, so
// a file of millions of lines is read in bounded memory; a malformed line is reported with its
// file name and line number and skipped, never silently dropped.
package input

import (
	"fmt"
	"strings"
)

// Format is the syntax of an input file.
type Format int

const (
	// FormatAuto detects the format: CSV when the first entry is a CSV header naming a "url" or
	// "id" column, otherwise mixed lines (each line a URL, an arXiv id or a JSON object).
	FormatAuto Format = iota
	// FormatLines is one URL or arXiv id per line.
	FormatLines
	// FormatJSONL is one JSON object per line (JSON Lines).
	FormatJSONL
	// FormatCSV is comma-separated values with a header line (columns id, url, urls, sha256;
	// other columns become metadata).
	FormatCSV
	// FormatBibTeX is a BibTeX database (.bib): the citation key is the paper id.
	FormatBibTeX
	// FormatRIS is a RIS export (.ris).
	FormatRIS
	// FormatCSLJSON is a CSL-JSON array of items (.json, as Zotero and citeproc export).
	FormatCSLJSON
)

// String returns the name used by the --format flag.
func (f Format) String() string {
	switch f {
	case FormatAuto:
		return "auto"
	case FormatLines:
		return "lines"
	case FormatJSONL:
		return "jsonl"
	case FormatCSV:
		return "csv"
	case FormatBibTeX:
		return "bibtex"
	case FormatRIS:
		return "ris"
	case FormatCSLJSON:
		return "csl-json"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// ParseFormat parses a --format value: auto, lines, jsonl, csv, bibtex, ris or csl-json (and
// the aliases txt, text, json, ndjson, bib, csljson, csl).
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return FormatAuto, nil
	case "lines", "txt", "text":
		return FormatLines, nil
	case "jsonl", "json", "ndjson":
		return FormatJSONL, nil
	case "csv":
		return FormatCSV, nil
	case "bibtex", "bib":
		return FormatBibTeX, nil
	case "ris":
		return FormatRIS, nil
	case "csl-json", "csljson", "csl":
		return FormatCSLJSON, nil
	}
	return FormatAuto, fmt.Errorf("unknown input format %q (want auto, lines, jsonl, csv, bibtex, ris or csl-json)", s)
}
