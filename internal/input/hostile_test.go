package input

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

// allocated returns the bytes allocated while f runs.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Hostile document inputs are read in time and memory proportional to their size (at most
// 16 times the input, plus 4 MiB), and what cannot be read is a clear error on its line.
func TestDocumentHostile(t *testing.T) {
	doublings := "@string{m = {x}}\n" + strings.Repeat("@string{m = m # m}\n", 24) + "@misc{k, doi = {10.1/k}, note = m}\n"
	for _, tc := range []struct {
		name, file, content string
		papers              int    // entries read
		errSub              string // "" when no error is wanted
	}{
		{"huge field", "a.bib", "@misc{k, doi = {10.1/k}, title = {" + strings.Repeat("x", 10<<20) + "}}\n", 1, ""},
		{"10 MB line of text", "a.bib", strings.Repeat("x", 10<<20) + "\n@misc{k, doi = {10.1/k}}\n", 1, ""},
		{"unterminated braces", "a.bib", "@misc{k, doi = {10.1/k}, title = {" + strings.Repeat("{a", 100_000) + "\n@misc{k2, doi = {10.1/k2}}\n", 0, "is not closed"},
		{"deeply nested braces", "a.bib", "@misc{k, doi = {10.1/k}, title = " + strings.Repeat("{", 1<<20) + "deep" + strings.Repeat("}", 1<<20) + "}\n", 1, ""},
		{"macro doubled", "a.bib", doublings, 1, "longer than"},
		{"macro self-reference", "a.bib", "@string{m = m # m}\n@string{m = {x} # m}\n@misc{k, doi = {10.1/k}, note = m}\n", 1, ""},
		{"NUL bytes", "a.bib", "@misc{k\x00, doi = {10.1/\x00k}, title = {a\x00b}}\n", 0, ""},
		{"invalid UTF-8", "a.bib", "@misc{k\xff\xfe, doi = {10.1/k\xc3}, title = {\xe2\x28\xa1}}\n", 0, ""},
		{"RIS continuation lines", "a.ris", "TY  - JOUR\nDO  - 10.1/k\nTI  - t\n" + strings.Repeat("continued\n", 50_000) + "ER  - \n", 1, ""},
		{"RIS blank lines", "a.ris", strings.Repeat("\n", 4<<20) + "TY  - JOUR\nDO  - 10.1/k\nER  - \n", 1, ""},
		{"RIS 10 MB line", "a.ris", "TY  - JOUR\nDO  - 10.1/k\nTI  - " + strings.Repeat("x", 10<<20) + "\nER  - \n", 1, ""},
		{"CSL-JSON deep nesting", "a.json", strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000), 0, "JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var papers []Paper
			var errs []*LineError
			n := allocated(func() { papers, errs = readNamed(t, tc.file, tc.content, Options{}) })
			if limit := 16*uint64(len(tc.content)) + 4<<20; n > limit {
				t.Errorf("allocated %d bytes for %d bytes of input, want at most %d", n, len(tc.content), limit)
			}
			if len(papers) != tc.papers {
				t.Errorf("%d papers, want %d", len(papers), tc.papers)
			}
			for _, p := range papers {
				for _, s := range append([]string{p.ID, p.DOI}, p.URLs...) {
					if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
						t.Errorf("paper %q carries a NUL or invalid UTF-8", s)
					}
				}
			}
			if tc.errSub == "" {
				return
			}
			for _, e := range errs {
				if strings.Contains(e.Error(), tc.errSub) {
					return
				}
			}
			t.Errorf("errors %v, want one with %q", errs, tc.errSub)
		})
	}
}

// A CSL-JSON export of many items gives every item its own line: the line of each item is
// counted on from the previous item's, not from the start of the file (that was quadratic:
// BenchmarkCSLJSONItems measures it; 200,000 items took 1m47s under -race before, 10 s after).
func TestCSLJSONManyItems(t *testing.T) {
	const n = 5_000
	papers, errs := readNamed(t, "big.json", cslItems(n), Options{})
	if len(errs) != 0 || len(papers) != n {
		t.Fatalf("%d papers, errors %v", len(papers), errs)
	}
	for i, p := range papers {
		if p.Line != i+2 || p.ID != fmt.Sprintf("k%d", i) {
			t.Fatalf("item %d: %+v, want line %d", i, p, i+2)
		}
	}
}

// BenchmarkCSLJSONItems reads a CSL-JSON export of 200,000 items (7 MB) per operation.
func BenchmarkCSLJSONItems(b *testing.B) {
	const n = 200_000
	content := cslItems(n)
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		src, err := openSource(strings.NewReader(content), "big.json", Options{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := src.Next(); err != nil {
				if _, ok := err.(*LineError); ok {
					continue
				}
				break
			}
		}
	}
}

// cslItems is a CSL-JSON array of n items, one a line after the "[" line.
func cslItems(n int) string {
	var b strings.Builder
	b.WriteString("[\n")
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"id": "k%d", "DOI": "10.1/k%d"}`, i, i)
	}
	b.WriteString("\n]\n")
	return b.String()
}

// A document of a million malformed lines holds a bounded description of them: the first
// maxDocumentErrors in full, the others by their line only; every one is still reported.
func TestDocumentManyErrors(t *testing.T) {
	const n = 1 << 20
	content := strings.Repeat("x\n", n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	src, err := openSource(strings.NewReader(content), "junk.ris", Options{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 8*int64(len(content)) {
		t.Errorf("the parsed document holds %d bytes for %d bytes of input", held, len(content))
	}
	count := 0
	for {
		_, err := src.Next()
		var le *LineError
		if !errors.As(err, &le) {
			break
		}
		count++
		if le.Line != count || le.File != "junk.ris" || le.Err == nil {
			t.Fatalf("error %d: %+v", count, le)
		}
	}
	if count != n {
		t.Fatalf("%d errors reported, want %d", count, n)
	}
}
