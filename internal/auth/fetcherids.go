package auth

import (
	"crypto/x509"
	"fmt"
	"strings"
	"unicode"
)

// Fetcher identity. A credential accepted on FetcherGatewayService can name the fetcher ids it
// may use, so that a fetcher cannot take another's id:
//
//   - a token line of a token file: `TOKEN fetcher-ids=ID[,ID...]`;
//   - a client certificate: URI SANs `paperfetch://fetcher/ID`, one per id.
//
// An ID is an exact fetcher id, or a prefix followed by `*` (`pod-*` matches `pod-7` and the
// default ids `pod-<random>` of fetchers on host `pod`); `*` alone matches every id. A token
// without `fetcher-ids=`, and a certificate without such a SAN, may use any id (the behaviour
// before ids were bound to credentials); the coordinator still keeps a live fetcher's id from
// being taken by another process (ALREADY_EXISTS), so such a credential can only take over the
// id of a fetcher that is gone.

// FetcherIDsOption is the token-file option that names a token's fetcher ids.
const FetcherIDsOption = "fetcher-ids"

// FetcherIDScheme and FetcherIDHost make the certificate URI SAN paperfetch://fetcher/ID.
const (
	FetcherIDScheme = "paperfetch"
	FetcherIDHost   = "fetcher"
)

// FetcherIDs is the set of fetcher ids a credential may use. The nil set allows every id.
type FetcherIDs struct {
	patterns []string
}

// ParseFetcherIDs parses a comma-separated list of ids and `prefix*` patterns.
func ParseFetcherIDs(list string) (*FetcherIDs, error) {
	f := &FetcherIDs{}
	for _, p := range strings.Split(list, ",") {
		if err := checkPattern(p); err != nil {
			return nil, err
		}
		f.patterns = append(f.patterns, p)
	}
	return f, nil
}

func checkPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty fetcher id in %s", FetcherIDsOption)
	}
	if i := strings.IndexByte(p, '*'); i >= 0 && i != len(p)-1 {
		return fmt.Errorf("fetcher id pattern %q: * may only end a pattern", p)
	}
	for _, r := range p {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("fetcher id pattern %q: white space or control character", p)
		}
	}
	return nil
}

// Allows reports whether a credential with this set may use fetcher id.
func (f *FetcherIDs) Allows(id string) bool {
	if f == nil {
		return true
	}
	for _, p := range f.patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(id, prefix) {
				return true
			}
		} else if p == id {
			return true
		}
	}
	return false
}

// String lists the patterns ("any" for the nil set).
func (f *FetcherIDs) String() string {
	if f == nil {
		return "any"
	}
	return strings.Join(f.patterns, ",")
}

// certFetcherIDs returns the fetcher ids named by a certificate's paperfetch://fetcher/ID URI
// SANs, or nil (any id) when it has none.
func certFetcherIDs(cert *x509.Certificate) *FetcherIDs {
	var f *FetcherIDs
	for _, u := range cert.URIs {
		if u.Scheme != FetcherIDScheme || u.Host != FetcherIDHost {
			continue
		}
		p := strings.TrimPrefix(u.Path, "/")
		if checkPattern(p) != nil {
			continue
		}
		if f == nil {
			f = &FetcherIDs{}
		}
		f.patterns = append(f.patterns, p)
	}
	if f == nil {
		for _, u := range cert.URIs {
			if u.Scheme == FetcherIDScheme && u.Host == FetcherIDHost {
				return &FetcherIDs{} // only invalid patterns: no id at all, rather than any
			}
		}
	}
	return f
}

// parseTokenOptions parses the options after a token on a token-file line.
func parseTokenOptions(opts []string) (*FetcherIDs, error) {
	var ids *FetcherIDs
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok || k != FetcherIDsOption {
			return nil, fmt.Errorf("unknown option %q after the token (a token may not contain white space; the only option is %s=ID[,ID...])", o, FetcherIDsOption)
		}
		f, err := ParseFetcherIDs(v)
		if err != nil {
			return nil, err
		}
		if ids == nil {
			ids = &FetcherIDs{}
		}
		ids.patterns = append(ids.patterns, f.patterns...)
	}
	return ids, nil
}

// FetcherIDLookup is implemented by token checkers that know the fetcher ids of each token
// (*TokenSet, *TokenFile).
type FetcherIDLookup interface {
	// FetcherIDs returns the fetcher ids token may use (nil: any) and whether token is known.
	FetcherIDs(token string) (*FetcherIDs, bool)
}
