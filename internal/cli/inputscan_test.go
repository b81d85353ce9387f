package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/internal/input"
)

// goldenScanInput mixes every kind of line the scan meets: plain URLs (with queries, ports,
// fragments, quotes, escapes, IPv6 and IDN hosts), arXiv ids and arXiv URLs, DOIs and doi.org
// links, JSON objects, duplicates, conflicts and malformed entries.
const goldenScanInput = `# a comment
http://127.0.0.1:40000/pdf/0?size=20480
http://127.0.0.1:40000/pdf/1?size=20480
https://example.org/papers/attention.pdf#page=3
"https://example.org/q.pdf?a=1&b=%20x"
<https://Example.ORG/Upper/Case.PDF>
https://[::1]:8443/v6/paper.pdf
https://例え.jp/論文.pdf?a=1
https://example.org/d/%E2%9C%93.pdf
https://example.org/
https://example.org
2301.00001
arXiv:2301.00002v3
hep-th/9901001
math.GT/0309136v2
https://arxiv.org/abs/2301.00003
https://arxiv.org/pdf/2301.00004v2.pdf
http://export.arxiv.org/abs/hep-th/9901002
https://arxiv.org/list/cs
10.1234/abc.def
doi:10.5555/XYZ
https://doi.org/10.1000/182
{"id":"j1","url":"https://example.org/j1.pdf","sha256":"ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789","title":"T"}
{"urls":["https://a.org/x.pdf","https://b.org/x.pdf#frag"],"doi":"10.1/x","metadata":{"k":"v"}}
{"arxiv":"2301.00005","n":3}
{"paper_id":"p2","url":"https://doi.org/10.9/y"}
http://127.0.0.1:40000/pdf/0?size=20480
https://example.org/papers/attention.pdf
ftp://example.org/a.pdf
https://user:pw@example.org/a.pdf
http:///nohost.pdf
https://example.org/a b.pdf
https://exa mple.org/a.pdf
http://[::1/x.pdf
https://example.org/%zz.pdf
https://example.org/ctl` + "\x7f" + `.pdf
arXiv:9999
doi:10.
10.1234
not a url
{"id":"j1","url":"https://example.org/other.pdf"}
{"id":"bad","url":"mailto:x@example.org"}
{"id":"nourl"}
{bad json
HTTPS://Example.org/Scheme.pdf
http://example.org:/emptyport.pdf
https://example.org?x=1
https://example.org/a%2Fb.pdf
https://example.org/sp%20ace/x+y.pdf;p?q=a%2Fb
https://arxiv.org/abs/2301.00006#v
HTTPS://ARXIV.ORG/pdf/2301.00007
https://arxiv.org/pdf/2301.0000
http://127.0.0.1:99999/port.pdf
https://example.org/x.pdf?
https://example.org/x.pdf#
https://example.org/last.pdf
`

// TestScanDigestGolden pins the batch id's digest of a fixed input, and what the scan reports
// for its malformed entries: a rerun of `get` on the same list must find the same batch (the id
// is "get-" and the digest's first 16 hex digits), whatever the input parser's implementation.
func TestScanDigestGolden(t *testing.T) {
	in := textInput(t, goldenScanInput)
	var errs []string
	res, err := in.scan(context.Background(), func(err error) { errs = append(errs, err.Error()) })
	if err != nil {
		t.Fatal(err)
	}
	const wantDigest = "3be053fe59a9cb2432c95c90533263f0c69cb7dba2da138773685dd834fa1882"
	if res.digest != wantDigest {
		t.Errorf("digest %s, want %s", res.digest, wantDigest)
	}
	if res.papers != 37 || res.bad != 16 || res.duplicates != 2 {
		t.Errorf("papers %d, bad %d, duplicates %d", res.papers, res.bad, res.duplicates)
	}
	got := strings.Join(errs, "\n")
	got = strings.ReplaceAll(got, in.names[0], "LIST")
	const wantErrs = `LIST:29: urls[0]: scheme "ftp" is not http or https
LIST:30: urls[0]: must not carry credentials (userinfo)
LIST:31: urls[0]: has no host
LIST:32: one URL or arXiv id per line expected, got "https://example.org/a b.pdf"
LIST:33: one URL or arXiv id per line expected, got "https://exa mple.org/a.pdf"
LIST:34: urls[0]: cannot be parsed: missing ']' in host
LIST:35: urls[0]: cannot be parsed: invalid URL escape "%zz"
LIST:36: urls[0]: cannot be parsed: net/url: invalid control character in URL
LIST:37: malformed arXiv id "arXiv:9999"
LIST:38: bad DOI: "10." is not a DOI (want 10.<registrant>/<suffix>)
LIST:39: not a URL, arXiv id or JSON object: "10.1234"
LIST:40: not a URL, arXiv id or JSON object: "not a url"
LIST:41: paper id "j1" was given before with different URLs, checksum or metadata; keeping the first
LIST:42: urls[0]: scheme "mailto" is not http or https
LIST:43: paper "nourl" has no URL or DOI (and its id is not an arXiv id)
LIST:44: bad JSON: invalid character 'b' looking for beginning of object key string`
	if got != wantErrs {
		t.Errorf("errors:\n%s\nwant:\n%s", got, wantErrs)
	}
}

// BenchmarkInputScan is the scan `get` runs before anything starts, of a 10,000-line list
// as bench/origin writes it (the 10,000 × 20 KiB row of bench/run).
func BenchmarkInputScan(b *testing.B) {
	const n = 10_000
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "http://127.0.0.1:40000/pdf/%d?size=20480\n", i)
	}
	name := filepath.Join(b.TempDir(), "list.txt")
	if err := os.WriteFile(name, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	in, err := newInputSet([]string{name}, input.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, err := in.scan(ctx, func(err error) { b.Fatal(err) })
		if err != nil || res.papers != n {
			b.Fatal(res.papers, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
}
