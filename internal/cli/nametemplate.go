package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/input"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// nameFields are the placeholders of --name-template.
var nameFields = map[string]bool{"id": true, "doi": true, "year": true, "first_author": true, "title": true}

var placeholder = regexp.MustCompile(`\{([^{}]*)\}`)

// maxTemplateBytes bounds --name-template: a name is at most maxNameBytes, and each paper's
// name is rendered from it.
const maxTemplateBytes = 1024

// checkNameTemplate validates a --name-template: at most maxTemplateBytes, known {fields} only,
// no path separator.
func checkNameTemplate(t string) error {
	if strings.TrimSpace(t) == "" {
		return nil
	}
	if len(t) > maxTemplateBytes {
		return fmt.Errorf("--name-template is longer than %d bytes", maxTemplateBytes)
	}
	if strings.ContainsAny(t, `/\`) {
		return fmt.Errorf("--name-template must not contain / or \\ (names are flat in --out)")
	}
	for _, m := range placeholder.FindAllStringSubmatch(t, -1) {
		if !nameFields[m[1]] {
			return fmt.Errorf("--name-template: unknown field {%s} (want {id}, {doi}, {year}, {first_author}, {title})", m[1])
		}
	}
	if rest := placeholder.ReplaceAllString(t, ""); strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("--name-template: unbalanced braces in %q", t)
	}
	return nil
}

// maxTitleBytes bounds the {title} part of a name.
const maxTitleBytes = 80

// renderName fills a template from a paper's spec and returns a file name stem safe on every
// common file system: ASCII letters, digits and ".-_+" only (accents removed, other characters
// become "_"), no leading dot or dash, no reserved Windows device name, at most maxNameBytes
// bytes. It returns "" when the result would be empty.
func renderName(t string, spec *pb.PaperSpec) string {
	md := spec.GetMetadata()
	doi := spec.GetDoi()
	if d, err := validate.NormalizeDOI(doi); err == nil {
		doi = d
	}
	values := map[string]string{
		"id": spec.GetPaperId(), "doi": doi, "year": md[input.MetaYear],
		"first_author": md[input.MetaFirstAuthor], "title": validate.Truncate(md[input.MetaTitle], maxTitleBytes),
	}
	name := placeholder.ReplaceAllStringFunc(t, func(m string) string { return safePart(values[m[1:len(m)-1]]) })
	name = safePart(name)
	for strings.Contains(name, "__") || strings.Contains(name, "--") {
		name = strings.ReplaceAll(strings.ReplaceAll(name, "__", "_"), "--", "-")
	}
	name = strings.Trim(name, "._-+ ")
	if len(name) > maxNameBytes {
		name = strings.TrimRight(name[:maxNameBytes], "._-+")
	}
	if isReservedName(name) {
		name = "_" + strings.TrimRight(name[:min(len(name), maxNameBytes-1)], "._-+")
	}
	return name
}

// asciiFold returns a transformer that removes accents (NFD, drop combining marks, NFC). A
// chain holds buffers and state: one per call, never shared (the placers name files at once).
func asciiFold() transform.Transformer {
	return transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
}

// safePart keeps ASCII letters, digits and ".-_+"; spaces and everything else become "_".
func safePart(s string) string {
	if !isASCII(s) { // accents to fold (most fields are ASCII: no transformer then)
		if folded, _, err := transform.String(asciiFold(), s); err == nil {
			s = folded
		}
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(".-_+", r)):
			b.WriteRune(r)
		case r == 'ß':
			b.WriteString("ss")
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// isReservedName reports whether a stem is a Windows device name (CON, NUL, COM1...).
func isReservedName(stem string) bool {
	base, _, _ := strings.Cut(stem, ".")
	// Every reserved name is 3 or 4 bytes, before and after ToUpper (the only letters whose
	// upper case is shorter, ı and ſ, become I and S, in none of them): most stems are longer
	// and need no upper-case copy.
	if len(base) != 3 && len(base) != 4 {
		return false
	}
	base = strings.ToUpper(base)
	switch base {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	return len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) && base[3] >= '1' && base[3] <= '9'
}

// templatedName returns the stem of p's file under the materializer's template, made unique
// among the names given in this run, compared without regard to case (macOS and Windows file
// systems ignore it): a name another paper already has gets "-" and 10 hex digits of the SHA-256
// of the paper id appended. Without a usable name it is FileName(id), made unique the same way.
func (m *materializer) templatedName(spec *pb.PaperSpec) string {
	id := spec.GetPaperId()
	name := renderName(m.template, spec)
	if name == "" {
		name = FileName(id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names == nil {
		m.names = map[string]string{}
	}
	if owner, taken := m.names[strings.ToLower(name)]; taken && owner != id {
		sum := sha256.Sum256([]byte(id))
		name = name + "-" + hex.EncodeToString(sum[:5])
	}
	m.names[strings.ToLower(name)] = id
	return name
}

// isASCII reports whether s has only ASCII bytes.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
