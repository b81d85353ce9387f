package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/paperfetch/paperfetch/internal/input"
)

// maxNameBytes bounds the stem of an output file name (file systems allow 255 bytes).
const maxNameBytes = 150

// isArxivOldName reports whether name is what an old-style arXiv id (hep-th/9901001) becomes
// with its slash replaced: such names are reserved for arXiv ids, so a literal id of that shape
// gets a hash.
func isArxivOldName(name string) bool {
	i := strings.LastIndexByte(name, '_')
	return i >= 0 && input.IsOldStyleArxivID(name[:i]+"/"+name[i+1:])
}

// FileName returns the file name stem (without ".pdf") for a paper id. It is deterministic and
// injective: ids made only of letters, digits, '.', '_', '-' and '+' (not starting with '.' or
// '-', and not a Windows device name such as CON or com1.x) keep their name; old-style arXiv ids have their slash replaced by '_'
// (hep-th/9901001 → hep-th_9901001); any other id is reduced to safe characters and gets '-'
// and 10 hex digits of its SHA-256 appended, so two ids never share a file.
func FileName(id string) string {
	if strings.IndexByte(id, '/') >= 0 && input.IsOldStyleArxivID(id) { // the only ids with a slash: no regexp run for the others
		return strings.Replace(id, "/", "_", 1)
	}
	if isSafeName(id) && !isArxivOldName(id) {
		return id
	}
	var b strings.Builder
	for _, r := range id {
		if b.Len() >= maxNameBytes-11 {
			break
		}
		if r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '_' || r == '-' || r == '+') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	stem := strings.TrimLeft(b.String(), ".-")
	sum := sha256.Sum256([]byte(id))
	if stem == "" {
		return "paper-" + hex.EncodeToString(sum[:5])
	}
	if isReservedName(stem) { // NUL.x: a device name, whatever follows its first dot
		stem = "_" + stem[:min(len(stem), maxNameBytes-12)] // within maxNameBytes with the hash
	}
	return stem + "-" + hex.EncodeToString(sum[:5])
}

// isSafeName reports whether id can be used as a file name stem as is.
func isSafeName(id string) bool {
	if id == "" || len(id) > maxNameBytes || id[0] == '.' || id[0] == '-' || isReservedName(id) {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+') {
			return false
		}
	}
	// A hashed name looks like STEM-<10 hex>; keep ids of that shape from colliding with one.
	if n := len(id); n > 11 && id[n-11] == '-' && isHex(id[n-10:]) {
		return false
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
