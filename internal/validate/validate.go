// Package validate checks the syntax of paperfetch requests at the RPC boundary: sizes, id and
// URL formats and per-message limits, exactly as documented in the proto contract
// (proto/paperfetch/v1). A violation becomes INVALID_ARGUMENT whose message names the field path
// (e.g. `papers[3].urls[0]: scheme "ftp" is not http or https`) and which carries a
// google.rpc.BadRequest detail listing every violation found.
//
// Semantic checks (does the batch exist, are ids unique across chunks, is the batch sealed)
// belong to the coordinator; this package only looks at one message.
package validate

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf8"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Limits of the contract. They mirror the proto comments; changing one is a contract change.
const (
	// MaxPaperIDBytes is the longest paper_id, in bytes.
	MaxPaperIDBytes = 512
	// MaxURLsPerPaper is the most candidate URLs a paper may have.
	MaxURLsPerPaper = 16
	// MaxURLBytes is the longest URL, in bytes.
	MaxURLBytes = 4096
	// MaxMetadataEntries is the most metadata entries a paper may carry.
	MaxMetadataEntries = 32
	// MaxMetadataKeyBytes is the longest metadata key, in bytes.
	MaxMetadataKeyBytes = 128
	// MaxMetadataValueBytes is the longest metadata value, in bytes.
	MaxMetadataValueBytes = 2048
	// MaxMetadataBytes bounds the keys and values of one paper's metadata together.
	MaxMetadataBytes = 16 << 10
	// MaxBatchIDBytes is the longest batch_id.
	MaxBatchIDBytes = 128
	// MaxPapersPerMessage is the most papers in one SubmitBatch or AppendPapers message.
	MaxPapersPerMessage = 5000
	// MaxLabels is the most labels a batch may carry.
	MaxLabels = 32
	// MaxLabelKeyBytes is the longest label key (keys are 1 to MaxLabelKeyBytes bytes).
	MaxLabelKeyBytes = 128
	// MaxLabelValueBytes is the longest label value.
	MaxLabelValueBytes = 1024
	// MaxCancelReasonBytes is the longest CancelBatch reason.
	MaxCancelReasonBytes = 1024
	// MaxChunks is the most chunks a batch may have: chunk indexes are 0 to MaxChunks-1.
	MaxChunks = 100_000
	// MaxPageTokenBytes is the longest page token the coordinator issues.
	MaxPageTokenBytes = 32
	// MaxListBatchesPageSize is the largest ListBatches page_size.
	MaxListBatchesPageSize = 1000
	// MaxListPapersPageSize is the largest ListPapers page_size.
	MaxListPapersPageSize = 5000
	// MaxReasonFilters bounds ListPapersRequest.reasons.
	MaxReasonFilters = 32
	// MaxListHostsPageSize is the largest ListHosts page_size.
	MaxListHostsPageSize = 1000
	// SHA256HexLen is the length of a hex SHA-256 digest.
	SHA256HexLen = 64
	// maxViolations bounds how many violations one error reports.
	maxViolations = 20
)

// Request validates one request message. It returns nil for a valid request and for message
// types it has no rules for (so it can be called on every message a server receives), and an
// *Error otherwise.
func Request(msg any) error {
	var v violations
	switch m := msg.(type) {
	case *pb.SubmitBatchRequest:
		v.optionalBatchID("batch_id", m.GetBatchId())
		v.papers("papers", m.GetPapers())
		v.labels("labels", m.GetLabels())
	case *pb.CreateBatchRequest:
		v.optionalBatchID("batch_id", m.GetBatchId())
		v.labels("labels", m.GetLabels())
	case *pb.AppendPapersRequest:
		v.batchID("batch_id", m.GetBatchId())
		if n := m.GetChunkIndex(); n < 0 {
			v.add("chunk_index", fmt.Sprintf("must not be negative, got %d", n))
		} else if n >= MaxChunks {
			v.add("chunk_index", fmt.Sprintf("must be at most %d (a batch has at most %d chunks), got %d", MaxChunks-1, MaxChunks, n))
		}
		v.papers("papers", m.GetPapers())
	case *pb.SealBatchRequest:
		v.batchID("batch_id", m.GetBatchId())
		if n := m.GetChunkCount(); n < 0 {
			v.add("chunk_count", fmt.Sprintf("must not be negative, got %d", n))
		} else if n > MaxChunks {
			v.add("chunk_count", fmt.Sprintf("must be at most %d, got %d", MaxChunks, n))
		}
	case *pb.GetBatchRequest:
		v.batchID("batch_id", m.GetBatchId())
	case *pb.ListBatchesRequest:
		v.pageSize("page_size", m.GetPageSize(), MaxListBatchesPageSize)
		v.pageToken("page_token", m.GetPageToken())
	case *pb.GetPaperRequest:
		v.batchID("batch_id", m.GetBatchId())
		v.paperID("paper_id", m.GetPaperId())
	case *pb.ListPapersRequest:
		v.batchID("batch_id", m.GetBatchId())
		for i, s := range m.GetStates() {
			if _, ok := pb.PaperState_name[int32(s)]; !ok || s == pb.PaperState_PAPER_STATE_UNSPECIFIED {
				v.add(index("states", i), fmt.Sprintf("%d is not a paper state", int32(s)))
			}
		}
		if len(m.GetReasons()) > MaxReasonFilters {
			v.add("reasons", fmt.Sprintf("at most %d entries, got %d", MaxReasonFilters, len(m.GetReasons())))
		}
		for i, r := range m.GetReasons() {
			if _, ok := pb.FailureReason_name[int32(r)]; !ok || r == pb.FailureReason_FAILURE_REASON_UNSPECIFIED {
				v.add(index("reasons", i), fmt.Sprintf("%d is not a failure reason", int32(r)))
			}
		}
		v.pageSize("page_size", m.GetPageSize(), MaxListPapersPageSize)
		v.pageToken("page_token", m.GetPageToken())
	case *pb.WatchBatchRequest:
		v.batchID("batch_id", m.GetBatchId())
	case *pb.CancelBatchRequest:
		v.batchID("batch_id", m.GetBatchId())
		v.text("reason", m.GetReason(), MaxCancelReasonBytes)
	case *pb.DeleteBatchRequest:
		v.batchID("batch_id", m.GetBatchId())
	case *pb.RetryFailedRequest:
		v.batchID("batch_id", m.GetBatchId())
	case *pb.ListHostsRequest:
		v.pageSize("page_size", m.GetPageSize(), MaxListHostsPageSize)
	case *pb.ReadPaperRequest:
		v.batchID("batch_id", m.GetBatchId())
		v.paperID("paper_id", m.GetPaperId())
		if m.GetOffset() < 0 {
			v.add("offset", fmt.Sprintf("must not be negative, got %d", m.GetOffset()))
		}
	case *pb.FetchRequest:
		v.url("url", m.GetUrl())
		v.sha256("expected_sha256", m.GetExpectedSha256())
		if m.GetMaxSizeBytes() < 0 {
			v.add("max_size_bytes", fmt.Sprintf("must not be negative, got %d", m.GetMaxSizeBytes()))
		}
		if t := m.GetTimeout(); t != nil {
			if err := t.CheckValid(); err != nil {
				v.add("timeout", err.Error())
			} else if t.AsDuration() <= 0 {
				v.add("timeout", "must be positive")
			}
		}
	default:
		return nil
	}
	return v.err()
}

// PaperSpec validates one paper; path prefixes the field names in the violations (e.g.
// "papers[3]" gives "papers[3].urls[0]"; "" gives "urls[0]"). It is exported for callers that
// build papers themselves (the CLI's input reader, tests).
func PaperSpec(path string, p *pb.PaperSpec) error {
	var v violations
	v.paper(path, p)
	return v.err()
}

// PaperSpecParsed validates p like PaperSpec, for a caller that has parsed its URLs already:
// parsed[i], when i < len(parsed) and not nil, must be what url.Parse(p.Urls[i]) returned
// without error, and is checked instead of parsing the URL again (a nil entry is parsed here).
// The violations are PaperSpec's, word for word.
func PaperSpecParsed(path string, p *pb.PaperSpec, parsed []*url.URL) error {
	var v violations
	v.paperParsed(path, p, parsed)
	return v.err()
}

// BatchID validates a client-chosen batch id (1 to MaxBatchIDBytes characters of
// [A-Za-z0-9._-]); path names the field in the violation.
func BatchID(path, id string) error {
	var v violations
	v.batchID(path, id)
	return v.err()
}

// Labels validates a batch's labels (count, key and value sizes); path names the field. The
// coordinator calls it itself too, as labels are returned in every Batch message.
func Labels(path string, labels map[string]string) error {
	var v violations
	v.labels(path, labels)
	return v.err()
}

// Field returns an *Error with one violation: field and what is wrong with it. Servers use it
// for the checks that need state (a page token out of range, a paper id already in the batch),
// so that every INVALID_ARGUMENT names its field in a BadRequest detail.
func Field(field, description string) error {
	return &Error{Violations: []Violation{{Field: field, Description: description}}}
}

// violations collects what is wrong with one message.
type violations struct {
	list    []Violation
	dropped int
}

func (v *violations) add(field, desc string) {
	if len(v.list) >= maxViolations {
		v.dropped++
		return
	}
	v.list = append(v.list, Violation{Field: field, Description: desc})
}

func (v *violations) err() error {
	if len(v.list) == 0 {
		return nil
	}
	return &Error{Violations: v.list, More: v.dropped}
}

func (v *violations) papers(path string, papers []*pb.PaperSpec) {
	switch n := len(papers); {
	case n == 0:
		v.add(path, "at least one paper is required")
		return
	case n > MaxPapersPerMessage:
		v.add(path, fmt.Sprintf("%d papers exceed the limit of %d per message; send them in chunks with AppendPapers", n, MaxPapersPerMessage))
		return
	}
	seen := make(map[string]int, len(papers))
	for i, p := range papers {
		v.paperAt(path, i, p)
		id := p.GetPaperId()
		if id == "" {
			continue
		}
		if j, dup := seen[id]; dup {
			v.add(index(path, i)+".paper_id", fmt.Sprintf("duplicate of %s.paper_id %q", index(path, j), truncate(id)))
			continue
		}
		seen[id] = i
	}
}

// paperAt validates p, element i of the list at path. Its violations are found with paths
// relative to the paper and prefixed with path[i] afterwards, so that a valid paper (nearly
// all of them) costs no path strings: about 6 allocations per paper submitted.
func (v *violations) paperAt(path string, i int, p *pb.PaperSpec) {
	var pv violations
	pv.paper("", p)
	if len(pv.list) == 0 {
		return
	}
	ip := index(path, i)
	for _, x := range pv.list {
		v.add(field(ip, x.Field), x.Description)
	}
	v.dropped += pv.dropped
}

func (v *violations) paper(path string, p *pb.PaperSpec) { v.paperParsed(path, p, nil) }

// paperParsed is paper, with the URLs already parsed (see PaperSpecParsed).
func (v *violations) paperParsed(path string, p *pb.PaperSpec, parsed []*url.URL) {
	if p == nil {
		v.add(path, "is null")
		return
	}
	v.paperID(field(path, "paper_id"), p.GetPaperId())
	urls := p.GetUrls()
	v.doi(field(path, "doi"), p.GetDoi())
	switch n := len(urls); {
	case n == 0 && p.GetDoi() == "":
		v.add(field(path, "urls"), "at least one URL is required (or a doi)")
	case p.GetDoi() != "" && n > MaxURLsWithDOI:
		v.add(field(path, "urls"), fmt.Sprintf("%d URLs exceed the limit of %d for a paper with a doi", n, MaxURLsWithDOI))
	case n > MaxURLsPerPaper:
		v.add(field(path, "urls"), fmt.Sprintf("%d URLs exceed the limit of %d", n, MaxURLsPerPaper))
	default:
		for i, u := range urls {
			var pu *url.URL
			if i < len(parsed) {
				pu = parsed[i]
			}
			v.urlParsed(index(field(path, "urls"), i), u, pu)
		}
	}
	v.sha256(field(path, "expected_sha256"), p.GetExpectedSha256())
	md := p.GetMetadata()
	if len(md) > MaxMetadataEntries {
		v.add(field(path, "metadata"), fmt.Sprintf("%d entries exceed the limit of %d", len(md), MaxMetadataEntries))
		return
	}
	total := 0
	for k, val := range md {
		total += len(k) + len(val)
	}
	if total > MaxMetadataBytes {
		v.add(field(path, "metadata"), fmt.Sprintf("%d bytes of keys and values exceed the limit of %d", total, MaxMetadataBytes))
	}
	for _, k := range sortedKeys(md) {
		entry := fmt.Sprintf("%s[%q]", field(path, "metadata"), truncate(k))
		val := md[k]
		if k == "" {
			v.add(entry, "key must not be empty")
		}
		if len(k) > MaxMetadataKeyBytes {
			v.add(entry, fmt.Sprintf("key of %d bytes exceeds the limit of %d", len(k), MaxMetadataKeyBytes))
		}
		if len(val) > MaxMetadataValueBytes {
			v.add(entry, fmt.Sprintf("value of %d bytes exceeds the limit of %d", len(val), MaxMetadataValueBytes))
		}
		if !utf8.ValidString(k) || !utf8.ValidString(val) {
			v.add(entry, "is not valid UTF-8")
		}
	}
}

func (v *violations) paperID(path, id string) {
	switch {
	case id == "":
		v.add(path, "is required")
	case len(id) > MaxPaperIDBytes:
		v.add(path, fmt.Sprintf("%d bytes exceed the limit of %d", len(id), MaxPaperIDBytes))
	case !utf8.ValidString(id):
		v.add(path, "is not valid UTF-8")
	case id == "." || id == "..":
		v.add(path, fmt.Sprintf("%q is not allowed", id))
	default:
		v.noControl(path, id)
	}
}

// noControl reports the first NUL or control character of s, by its character (rune) position.
func (v *violations) noControl(path, s string) {
	pos := 0
	for _, r := range s {
		if r == 0 {
			v.add(path, fmt.Sprintf("contains NUL at character %d", pos))
			return
		}
		if unicode.IsControl(r) {
			v.add(path, fmt.Sprintf("contains control character %U at character %d", r, pos))
			return
		}
		pos++
	}
}

// text checks an optional free-form string: valid UTF-8, at most max bytes.
func (v *violations) text(path, s string, max int) {
	switch {
	case len(s) > max:
		v.add(path, fmt.Sprintf("%d bytes exceed the limit of %d", len(s), max))
	case !utf8.ValidString(s):
		v.add(path, "is not valid UTF-8")
	}
}

// pageToken checks the shape of a page token (the coordinator issues decimal positions); the
// coordinator checks its range.
func (v *violations) pageToken(path, tok string) {
	if len(tok) > MaxPageTokenBytes {
		v.add(path, fmt.Sprintf("%d bytes exceed the limit of %d; pass the next_page_token of a previous call", len(tok), MaxPageTokenBytes))
		return
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			v.add(path, "is not a token this server issued; pass the next_page_token of a previous call")
			return
		}
	}
}

func (v *violations) url(path, raw string) { v.urlParsed(path, raw, nil) }

// urlParsed is url, with u, when not nil, the result of url.Parse(raw) without error.
func (v *violations) urlParsed(path, raw string, u *url.URL) {
	if raw == "" {
		v.add(path, "is required")
		return
	}
	if len(raw) > MaxURLBytes {
		v.add(path, fmt.Sprintf("%d bytes exceed the limit of %d", len(raw), MaxURLBytes))
		return
	}
	if !utf8.ValidString(raw) {
		v.add(path, "is not valid UTF-8")
		return
	}
	if u == nil {
		var err error
		if u, err = url.Parse(raw); err != nil {
			v.add(path, "cannot be parsed: "+parseError(err))
			return
		}
	}
	switch {
	case !u.IsAbs():
		v.add(path, "is not an absolute URL")
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(path, fmt.Sprintf("scheme %q is not http or https", truncate(u.Scheme)))
	case u.User != nil:
		v.add(path, "must not carry credentials (userinfo)")
	case u.Host == "" || u.Hostname() == "":
		v.add(path, "has no host")
	}
}

// parseError is what url.Parse's error says, without the "parse URL:" wrapping.
func parseError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func (v *violations) sha256(path, s string) {
	if s == "" {
		return
	}
	if len(s) != SHA256HexLen {
		v.add(path, fmt.Sprintf("must be empty or %d hex digits, got %d characters", SHA256HexLen, len(s)))
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			v.add(path, fmt.Sprintf("must be hex digits, found %q at %d", c, i))
			return
		}
	}
}

func (v *violations) batchID(path, id string) {
	if id == "" {
		v.add(path, "is required")
		return
	}
	v.optionalBatchID(path, id)
}

func (v *violations) optionalBatchID(path, id string) {
	if id == "" {
		return
	}
	if len(id) > MaxBatchIDBytes {
		v.add(path, fmt.Sprintf("%d characters exceed the limit of %d", len(id), MaxBatchIDBytes))
		return
	}
	if id == "." || id == ".." {
		v.add(path, fmt.Sprintf("%q is not allowed", id))
		return
	}
	pos := 0
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			if c == utf8.RuneError {
				v.add(path, fmt.Sprintf("is not valid UTF-8 at character %d", pos))
			} else {
				v.add(path, fmt.Sprintf("character %q at %d is not one of [A-Za-z0-9._-]", c, pos))
			}
			return
		}
		pos++
	}
}

func (v *violations) labels(path string, labels map[string]string) {
	if len(labels) > MaxLabels {
		v.add(path, fmt.Sprintf("%d labels exceed the limit of %d", len(labels), MaxLabels))
		return
	}
	for _, k := range sortedKeys(labels) {
		entry := fmt.Sprintf("%s[%q]", path, truncate(k))
		val := labels[k]
		switch {
		case k == "":
			v.add(entry, "key must not be empty")
		case len(k) > MaxLabelKeyBytes:
			v.add(entry, fmt.Sprintf("key of %d bytes exceeds the limit of %d", len(k), MaxLabelKeyBytes))
		case !utf8.ValidString(k):
			v.add(entry, "key is not valid UTF-8")
		default:
			v.noControl(entry, k)
		}
		switch {
		case len(val) > MaxLabelValueBytes:
			v.add(entry, fmt.Sprintf("value of %d bytes exceeds the limit of %d", len(val), MaxLabelValueBytes))
		case !utf8.ValidString(val):
			v.add(entry, "value is not valid UTF-8")
		default:
			v.noControl(entry, val)
		}
	}
}

func (v *violations) pageSize(path string, n, max int32) {
	if n < 0 || n > max {
		v.add(path, fmt.Sprintf("must be between 0 and %d, got %d", max, n))
	}
}

// field returns path.name, or name when path is empty, or path when name is.
func field(path, name string) string {
	switch {
	case path == "":
		return name
	case name == "":
		return path
	}
	return path + "." + name
}

// index returns path[i].
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// truncate shortens a client-supplied value quoted in an error message.
func truncate(s string) string { return Truncate(s, 64) }

// Truncate shortens s, a client-supplied value quoted in an error message, to at most max
// bytes (cut at a rune boundary) plus "…".
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil // the iterators below allocate even for an empty map (every paper without metadata)
	}
	return slices.Sorted(maps.Keys(m))
}
