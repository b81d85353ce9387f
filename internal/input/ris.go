package input

import (
	"fmt"
	"strings"
)

// risRecord is one RIS reference (TY ... ER) with its first line.
type risRecord struct {
	tags map[string][]string
	line int
}

// parseRIS reads a RIS document: lines "XX  - value" (two-character tag, two spaces, a dash),
// a reference from TY to ER, CRLF or LF line endings. Lines that continue a value (no tag) are
// appended to the previous value.
func parseRIS(src string) ([]risRecord, *errList) {
	var out []risRecord
	errs := &errList{}
	var cur *risRecord
	var lastTag string
	// cont holds the continuation lines of lastTag's last value, joined to it once the value
	// ends (appending each to the value would copy it once per line).
	var cont []string
	endValue := func() {
		if len(cont) > 0 {
			vs := cur.tags[lastTag]
			vs[len(vs)-1] += " " + strings.Join(cont, " ")
			cont = cont[:0]
		}
	}
	n := -1
	for line := range strings.SplitSeq(src, "\n") { // not Split: 16 bytes a line, 16x a file of blank lines
		n++
		lineNo := n + 1
		line = strings.TrimRight(line, "\r")
		if n == 0 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		tag, val, ok := risLine(line)
		if ok && cur != nil {
			endValue()
		}
		if !ok {
			if cur != nil && lastTag != "" {
				cont = append(cont, strings.TrimSpace(line))
				continue
			}
			errs.add(lineNo, fmt.Errorf("not a RIS line: %q", short(line)))
			continue
		}
		switch tag {
		case "TY":
			if cur != nil {
				errs.add(cur.line, fmt.Errorf("RIS reference without ER before line %d", lineNo))
			}
			cur = &risRecord{tags: map[string][]string{}, line: lineNo}
			lastTag = ""
			continue
		case "ER":
			if cur == nil {
				errs.add(lineNo, fmt.Errorf("ER without TY"))
				continue
			}
			out = append(out, *cur)
			cur, lastTag = nil, ""
			continue
		}
		if cur == nil {
			errs.add(lineNo, fmt.Errorf("RIS tag %s outside a reference (no TY before it)", tag))
			continue
		}
		cur.tags[tag] = append(cur.tags[tag], val)
		lastTag = tag
	}
	if cur != nil {
		endValue()
		errs.add(cur.line, fmt.Errorf("RIS reference not ended by ER"))
	}
	return out, errs
}

// risLine splits "XX  - value"; the tag is two upper-case letters or digits.
func risLine(line string) (string, string, bool) {
	if len(line) < 5 || line[2] != ' ' || line[3] != ' ' || line[4] != '-' {
		return "", "", false
	}
	for _, c := range line[:2] {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return "", "", false
		}
	}
	return line[:2], strings.TrimSpace(line[5:]), true
}

// risToEntry converts a RIS reference: ID is the paper id, DO the DOI, UR/L1/L2 http(s) links
// the URLs (a doi.org link counts as the DOI), TI/T1 the title, PY/Y1/DA the year, AU/A1 the
// first author.
func risToEntry(r risRecord) entry {
	first := func(tags ...string) string {
		for _, t := range tags {
			if v := r.tags[t]; len(v) > 0 && v[0] != "" {
				return v[0]
			}
		}
		return ""
	}
	e := entry{id: first("ID"), doi: first("DO"), title: first("TI", "T1"), year: yearOf(first("PY", "Y1", "DA")), author: firstAuthor(first("AU", "A1"))}
	for _, t := range []string{"L1", "UR", "L2"} {
		for _, u := range r.tags[t] {
			for _, f := range strings.Fields(u) { // several links may share a line
				if !strings.HasPrefix(f, "http://") && !strings.HasPrefix(f, "https://") {
					continue
				}
				if isDOIURL(f) {
					if e.doi == "" {
						e.doi = f
					}
					continue
				}
				e.urls = append(e.urls, f)
			}
		}
	}
	if len(e.urls) > 4 {
		e.urls = e.urls[:4]
	}
	return e
}
