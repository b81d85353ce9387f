package cli

import (
	"strings"
	"sync"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestRenderName(t *testing.T) {
	spec := &pb.PaperSpec{PaperId: "smith2020", Doi: "doi:10.1002/(SICI)1097<X>", Metadata: map[string]string{
		"year": "2020", "first_author": "Müller-Lüdenscheidt", "title": "Über: a/b \\ c? *PDF*s \"quoted\" <ok> | ß " + strings.Repeat("long ", 40)}}
	for tmpl, want := range map[string]string{
		"{id}":                         "smith2020",
		"{first_author}{year}-{title}": "Muller-Ludenscheidt2020-Uber_a_b_c_PDF_s_quoted_ok_ss_long_long_long_long_long_long_long_lon",
		"{doi}":                        "10.1002_sici_1097_x",
		"{year}_{first_author}":        "2020_Muller-Ludenscheidt",
		"{title}{missing-but-checked}": "",
	} {
		if tmpl == "{title}{missing-but-checked}" {
			if err := checkNameTemplate(tmpl); err == nil {
				t.Errorf("unknown field accepted")
			}
			continue
		}
		if err := checkNameTemplate(tmpl); err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		got := renderName(tmpl, spec)
		if got != want {
			t.Errorf("%s: %q, want %q", tmpl, got, want)
		}
		if len(got) > maxNameBytes || strings.ContainsAny(got, `/\:*?"<>| `) {
			t.Errorf("%s: unsafe %q", tmpl, got)
		}
	}
	if got := renderName("{year}", &pb.PaperSpec{PaperId: "x"}); got != "" {
		t.Errorf("empty fields: %q", got)
	}
	if got := renderName("{id}", &pb.PaperSpec{PaperId: "con"}); got != "_con" {
		t.Errorf("reserved name: %q", got)
	}
	for _, bad := range []string{"a/{id}", `{id}\x`, "{id", "{title}}"} {
		if err := checkNameTemplate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	m := &materializer{out: "o", template: "{first_author}{year}"}
	a := m.templatedName(&pb.PaperSpec{PaperId: "a", Metadata: map[string]string{"first_author": "Lee", "year": "2001"}})
	b := m.templatedName(&pb.PaperSpec{PaperId: "b", Metadata: map[string]string{"first_author": "Lee", "year": "2001"}})
	a2 := m.templatedName(&pb.PaperSpec{PaperId: "a", Metadata: map[string]string{"first_author": "Lee", "year": "2001"}})
	if a != "Lee2001" || b == a || !strings.HasPrefix(b, "Lee2001-") || a2 != a {
		t.Errorf("collisions: %q %q %q", a, b, a2)
	}
	if got := m.templatedName(&pb.PaperSpec{PaperId: "10.1/x"}); got != FileName("10.1/x") {
		t.Errorf("fallback: %q", got)
	}
	// Names that differ only in case are one file on macOS and Windows: the second is made unique.
	c := m.templatedName(&pb.PaperSpec{PaperId: "c", Metadata: map[string]string{"first_author": "LEE", "year": "2001"}})
	if strings.EqualFold(c, a) {
		t.Errorf("case-insensitive collision: %q and %q", a, c)
	}
	// A paper named by its id (no usable field) does not take another paper's templated name,
	// nor does a templated name take a fallback's.
	d := m.templatedName(&pb.PaperSpec{PaperId: "lee2001"})
	e := m.templatedName(&pb.PaperSpec{PaperId: "e", Metadata: map[string]string{"first_author": "Cruz", "year": "1999"}})
	f := m.templatedName(&pb.PaperSpec{PaperId: "Cruz1999"})
	if strings.EqualFold(d, a) || strings.EqualFold(f, e) {
		t.Errorf("fallback collisions: %q %q, %q %q", d, a, f, e)
	}
}

// Hostile fields and ids give a flat, portable name: no separator, no control or NUL
// character, no leading dot, no trailing dot or space, no Windows device name (with or without
// an extension), at most maxNameBytes bytes; a template is bounded.
func TestRenderNameHostile(t *testing.T) {
	hostile := []string{"../../etc/passwd", "..", ".", "a/b\\c", "x\x00y", "line\r\nbreak\x1b[31m", "\u202egnp.exe",
		"a\uff0fb", strings.Repeat("T", 10000), strings.Repeat("é", 5000), "CON", "con.txt", "aux ", "LPT9.", "COM1",
		"nul.tar.gz", "trailing. . ", "   ", "...", "-rf"}
	for _, tmpl := range []string{"{title}", "{first_author}", "{first_author}.{year}", "{id}", "{doi}"} {
		m := &materializer{template: tmpl}
		for _, v := range hostile {
			spec := &pb.PaperSpec{PaperId: v, Doi: v, Metadata: map[string]string{"title": v, "first_author": v, "year": v}}
			name := m.templatedName(spec)
			if name == "" || len(name) > maxNameBytes+11 || strings.ContainsAny(name, "/\\\x00 ") ||
				name[0] == '.' || name[0] == '-' || strings.HasSuffix(name, ".") || isReservedName(name) {
				t.Errorf("%s with %q: name %q", tmpl, v, name)
			}
			for _, r := range name {
				if r < ' ' || r >= 0x7f {
					t.Errorf("%s with %q: name %q has %U", tmpl, v, name, r)
				}
			}
		}
	}
	for _, id := range []string{"CON", "con", "Aux", "COM1", "lpt9", "NUL.x"} {
		if name := FileName(id); isReservedName(name) {
			t.Errorf("FileName(%q) = %q, a Windows device name", id, name)
		}
	}
	long := "NUL." + strings.Repeat("x", 300) // a device name that fills maxNameBytes
	if name := FileName(long); len(name) > maxNameBytes {
		t.Errorf("FileName of a long device name: %d bytes, more than %d", len(name), maxNameBytes)
	}
	if name := renderName("{id}", &pb.PaperSpec{PaperId: long}); len(name) > maxNameBytes || isReservedName(name) {
		t.Errorf("renderName of a long device name: %q, %d bytes", name, len(name))
	}
	if err := checkNameTemplate(strings.Repeat("{title}", 1000)); err == nil {
		t.Error("a 7,000-byte template accepted")
	}
}

// The placers name files at once: renderName shares no state between calls (under -race, a
// shared transformer was a data race that failed `get` with --name-template).
func TestRenderNameConcurrent(t *testing.T) {
	spec := &pb.PaperSpec{PaperId: "x", Metadata: map[string]string{"first_author": "Müller", "year": "2020", "title": "Über Ångström"}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if got := renderName("{first_author}{year}-{title}", spec); got != "Muller2020-Uber_Angstrom" {
					t.Errorf("got %q", got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestIsReservedName(t *testing.T) {
	for name, want := range map[string]bool{
		"CON": true, "con": true, "Nul.tar.gz": true, "aux.": true, "prn.pdf": true, "com1": true, "LpT9.x": true,
		"cons": false, "com0": false, "comx": false, "co": false, "": false, ".con": false, "con-1": false,
		"0-1a2b3c4d": false, "nul_": false, "lpt10": false, "ſon": false, "auxı": false,
	} {
		if got := isReservedName(name); got != want {
			t.Errorf("isReservedName(%q) = %v, want %v", name, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { isReservedName("paper-1a2b3c4d") }); n != 0 {
		t.Errorf("a long stem costs %v allocations, want 0", n)
	}
}
