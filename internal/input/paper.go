package input

import (
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Paper is one entry of an input: what is submitted to the coordinator as a PaperSpec.
type Paper struct {
	// ID is the paper id: the canonical arXiv id, the id given in JSON or CSV, or one derived
	// from the URL (see URLID).
	ID string
	// URLs are the candidate URLs, tried in order (at least one unless DOI is set).
	URLs []string
	// DOI is the paper's DOI, normalised (lower case, no prefix), or empty. Its routes are
	// tried after the URLs.
	DOI string
	// SHA256 is the expected digest in lowercase hex, or empty.
	SHA256 string
	// Metadata holds extra JSON fields or CSV columns; nil when there are none.
	Metadata map[string]string
	// File is the name of the input the entry came from ("-" for standard input).
	File string
	// Line is the entry's line number in File, starting at 1.
	Line int
}

// Spec returns the entry in its wire form.
func (p Paper) Spec() *pb.PaperSpec {
	return &pb.PaperSpec{PaperId: p.ID, Urls: p.URLs, Doi: p.DOI, ExpectedSha256: p.SHA256, Metadata: p.Metadata}
}
