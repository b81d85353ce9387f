package input

import (
	"encoding/json"
	"fmt"
	"strings"
)

// cslItem is the part of a CSL-JSON item paperfetch reads.
type cslItem struct {
	ID     json.RawMessage `json:"id"`
	DOI    string          `json:"DOI"`
	URL    string          `json:"URL"`
	Title  string          `json:"title"`
	Author []struct {
		Family  string `json:"family"`
		Given   string `json:"given"`
		Literal string `json:"literal"`
	} `json:"author"`
	Issued struct {
		DateParts [][]json.RawMessage `json:"date-parts"`
		Raw       string              `json:"raw"`
	} `json:"issued"`
}

// parseCSLJSON reads a CSL-JSON document: an array of items, streamed one item at a time.
// An item that does not decode is reported (by its position) and skipped.
func parseCSLJSON(src string) ([]entry, []int, *errList) {
	dec := json.NewDecoder(strings.NewReader(src))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, oneError(1, fmt.Errorf("bad CSL-JSON: %w", err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, nil, oneError(1, fmt.Errorf("bad CSL-JSON: want an array of items"))
	}
	var out []entry
	var lines []int
	errs := &errList{}
	// lineAt returns the line of the offset off, counting on from the previous call's offset
	// (offsets only grow: counting from the start for each item was quadratic).
	line, counted := 1, 0
	lineAt := func(off int64) int {
		if int(off) > counted {
			line += strings.Count(src[counted:off], "\n")
			counted = int(off)
		}
		return line
	}
	for dec.More() {
		before := lineAt(dec.InputOffset())
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			errs.add(before, fmt.Errorf("bad CSL-JSON: %w", err))
			return out, lines, errs
		}
		line := lineAt(dec.InputOffset() - int64(len(raw)))
		var it cslItem
		if err := json.Unmarshal(raw, &it); err != nil {
			errs.add(line, fmt.Errorf("bad CSL-JSON item: %w", err))
			continue
		}
		out = append(out, cslToEntry(it))
		lines = append(lines, line)
	}
	return out, lines, errs
}

// cslToEntry converts a CSL-JSON item: id (string or number), DOI, URL, title, issued year and
// the first author's family name (or literal name, kept whole).
func cslToEntry(it cslItem) entry {
	e := entry{doi: it.DOI, title: it.Title}
	var s string
	if json.Unmarshal(it.ID, &s) == nil {
		e.id = s
	} else if len(it.ID) > 0 && string(it.ID) != "null" {
		e.id = string(it.ID)
	}
	if u := strings.TrimSpace(it.URL); u != "" {
		if isDOIURL(u) {
			if e.doi == "" {
				e.doi = u
			}
		} else {
			e.urls = []string{u}
		}
	}
	if len(it.Issued.DateParts) > 0 && len(it.Issued.DateParts[0]) > 0 {
		e.year = yearOf(strings.Trim(string(it.Issued.DateParts[0][0]), `"`))
	} else {
		e.year = yearOf(it.Issued.Raw)
	}
	if len(it.Author) > 0 {
		a := it.Author[0]
		e.author = a.Family
		if e.author == "" {
			e.author = strings.TrimSpace(a.Literal) // a literal name is whole ("World Health Organization")
		}
	}
	return e
}
