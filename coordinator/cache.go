package coordinator

import (
	"strings"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// The cache: a new paper whose id, URL or DOI matches a SUCCEEDED paper reuses its blob.
// The in-memory hash indexes only point at candidates; every hit is checked against the store.

type cacheAdd struct {
	idx             uint32
	idHash, urlHash uint64
}

// cacheLookup finds a SUCCEEDED paper with the same id or one of the URLs whose blob can be
// reused. Hits of the in-memory hash indexes are verified against the store.
func (e *engine) cacheLookup(paperID string, urls []string, expected string) (*storedPaper, bool) {
	check := func(idx uint32, match func(*storedPaper, *pb.PaperSpec) bool) (*storedPaper, bool) {
		rec, spec, err := e.committedRecord(idx)
		if err != nil {
			e.log.Error("cache lookup", "paper_index", idx, "err", err)
			return nil, false
		}
		if rec.state != stateSucceeded || !e.blobUsable(rec.blobKey) || !match(rec, spec) {
			return nil, false
		}
		if expected != "" && !strings.EqualFold(expected, rec.sha256) {
			return nil, false
		}
		return rec, true
	}
	if idx, ok := e.cacheByID[hashString(paperID)]; ok {
		if rec, ok := check(idx, func(_ *storedPaper, s *pb.PaperSpec) bool { return s.GetPaperId() == paperID }); ok {
			return rec, true
		}
	}
	for _, u := range urls {
		idx, ok := e.cacheByURL[hashString(u)]
		if !ok {
			continue
		}
		if rec, ok := check(idx, func(_ *storedPaper, s *pb.PaperSpec) bool {
			for _, su := range s.GetUrls() {
				if su == u {
					return true
				}
			}
			return false
		}); ok {
			return rec, true
		}
	}
	return nil, false
}

// completeCached makes a live paper SUCCEEDED as a cache hit of rec.
func (e *engine) completeCached(idx uint32, rec *storedPaper, now time.Time) {
	p := &e.papers[idx]
	b := e.batches[p.batch]
	p.flags |= flagCached
	c := e.coldOf(idx)
	c.success = true
	c.size, c.sha256, c.blobKey, c.finalURL, c.ctype = rec.size, rec.sha256, rec.blobKey, rec.finalURL, rec.contentType
	c.source = rec.source
	c.urlHash, c.finalHash = rec.urlHash, rec.finalHash
	b.cached++
	b.bytesStored += rec.size
	e.m.cacheHits.Inc()
	e.setState(idx, stateSucceeded, now)
}

// cacheLookupPaper finds a stored PDF for a paper: by id, by URL, or by DOI.
func (e *engine) cacheLookupPaper(idx uint32, spec *pb.PaperSpec) (*storedPaper, bool) {
	if rec, hit := e.cacheLookup(spec.GetPaperId(), spec.GetUrls(), spec.GetExpectedSha256()); hit {
		return rec, true
	}
	if spec.GetDoi() == "" {
		return nil, false
	}
	doi, err := validate.NormalizeDOI(spec.GetDoi())
	if err != nil {
		return nil, false
	}
	return e.cacheLookupDOI(doi, spec.GetExpectedSha256())
}

// cacheLookupDOI finds a SUCCEEDED paper with the same DOI, verified against its spec.
func (e *engine) cacheLookupDOI(doi, expected string) (*storedPaper, bool) {
	idx, ok, err := e.stored.doiPaper(doi)
	if err != nil || !ok {
		return nil, false
	}
	rec, spec, err := e.committedRecord(idx)
	if err != nil {
		e.log.Error("doi cache lookup", "doi", doi, "err", err)
		return nil, false
	}
	if rec.state != stateSucceeded || !e.blobUsable(rec.blobKey) {
		return nil, false
	}
	if d, err := validate.NormalizeDOI(spec.GetDoi()); err != nil || d != doi {
		return nil, false
	}
	if expected != "" && !strings.EqualFold(expected, rec.sha256) {
		return nil, false
	}
	return rec, true
}
