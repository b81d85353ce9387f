package input

import (
	"encoding/json"
	"fmt"
)

// paperRecordSpec is the "spec" of a Paper as `paperfetch ls BATCH --json` prints it (protojson
// with the proto field names), so that such a listing is an input as is:
// `paperfetch ls BATCH --state failed --json | paperfetch submit -`.
type paperRecordSpec struct {
	PaperID        string            `json:"paper_id"`
	URLs           []string          `json:"urls"`
	ExpectedSHA256 string            `json:"expected_sha256"`
	DOI            string            `json:"doi"`
	Metadata       map[string]string `json:"metadata"`
}

// fromPaperRecord reads a JSON line that is a Paper record (it has a "spec" object and no
// "id"/"url" of its own): only its spec matters; the state, attempts and errors are not
// metadata of the new paper.
func fromPaperRecord(opts Options, raw map[string]json.RawMessage) (Paper, bool, error) {
	spec, ok := raw["spec"]
	if !ok {
		return Paper{}, false, nil
	}
	for _, k := range []string{"id", "paper_id", "url", "urls"} {
		if _, has := raw[k]; has {
			return Paper{}, false, nil // an ordinary entry with a "spec" metadata field
		}
	}
	var s paperRecordSpec
	if err := json.Unmarshal(spec, &s); err != nil {
		return Paper{}, true, fmt.Errorf("bad JSON: spec: %w", err)
	}
	p, err := finishEntry(opts, entry{id: s.PaperID, urls: s.URLs, sha: s.ExpectedSHA256, doi: s.DOI, md: s.Metadata})
	return p, true, err
}
