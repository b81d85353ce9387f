package coordinator

import (
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Single flight by DOI. A lease holds its paper id and URL (inflight.go), but a DOI's plan is
// many leases (resolution steps, then downloads of what they found) with gaps between them:
// two papers with the same DOI (a .bib key and a Zotero key for one article, the same DOI in two
// batches) would each ask every API and download the PDF. So the first planned paper of a DOI
// to be assigned owns the DOI's key until it is terminal (SUCCEEDED, FAILED, CANCELLED) or
// deleted; another planned paper with that DOI parks on the key like on a lease's (it stays
// QUEUED: no host slot, no credit, no attempt). The key is let go at the flush after the
// owner's end is committed, so a success is in the DOI cache before the waiters look: they
// complete as cache hits (CACHED), or, when the owner failed, was cancelled or the cache rules
// refuse its PDF (expected_sha256), run their own plans, one at a time again.
//
// The key is the hash of "doi " and the normalised DOI: never equal to a paper id's (ids that
// default to the DOI have no prefix). In memory only: a reload makes every planned paper that
// started its plan (attempts > 0) and is not terminal own its DOI again (reloadDOIOwners).
// Bounds: one key per live planned paper.

// doiKey is the single-flight key of a paper's DOI (0 when it has none or it is malformed).
func doiKey(spec *pb.PaperSpec) uint64 {
	if spec.GetDoi() == "" {
		return 0
	}
	doi, err := validate.NormalizeDOI(spec.GetDoi())
	if err != nil {
		return 0
	}
	return hashString("doi " + doi)
}

// claimDOI makes planned paper idx own its DOI's key (at its assign, or at a reload), unless
// it or another paper does already: a key has one owner, which never waits for it, so two
// papers cannot wait for each other.
func (e *engine) claimDOI(idx uint32, spec *pb.PaperSpec) {
	if e.papers[idx].flags&flagPlanned == 0 {
		return
	}
	if _, owns := e.doiOwner[idx]; owns {
		return
	}
	k := doiKey(spec)
	if k == 0 || e.held[k] > 0 {
		return // no DOI, or another paper owns it (after a reload: the first one claims it)
	}
	if e.doiOwner == nil {
		e.doiOwner = make(map[uint32]uint64)
	}
	if e.held == nil {
		e.held = make(map[uint64]int32)
	}
	e.doiOwner[idx] = k
	e.held[k]++
}

// releaseDOI lets paper idx's DOI key go at the end of the iteration (it is terminal or deleted).
func (e *engine) releaseDOI(idx uint32) {
	k, owns := e.doiOwner[idx]
	if !owns {
		return
	}
	delete(e.doiOwner, idx)
	e.letGo = append(e.letGo, k)
}

// heldDOI reports whether paper idx's DOI key is owned by another paper.
func (e *engine) heldDOI(idx uint32, spec *pb.PaperSpec) (uint64, bool) {
	if e.papers[idx].flags&flagPlanned == 0 {
		return 0, false
	}
	k := doiKey(spec)
	if k == 0 {
		return 0, false
	}
	n := e.held[k]
	if e.doiOwner[idx] == k {
		n--
	}
	return k, n > 0
}

// reloadDOIOwners gives the DOI keys back to the planned papers that had started their plans
// before a restart.
func (e *engine) reloadDOIOwners() error {
	for idx := range e.papers {
		p := &e.papers[idx]
		if p.flags&flagPlanned == 0 || p.attempts == 0 || p.state == 0 || terminal(p.state) {
			continue
		}
		spec, err := e.specOf(uint32(idx))
		if err != nil {
			return err
		}
		e.claimDOI(uint32(idx), spec)
	}
	return nil
}
