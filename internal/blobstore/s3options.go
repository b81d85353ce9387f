package blobstore

import (
	"flag"
	"fmt"
	"net/url"
	"strconv"
)

// S3Options are S3 connection settings given as flags rather than in the s3:// URL (the URL
// wins when it sets the same parameter).
type S3Options struct {
	// Endpoint is the S3 endpoint URL, e.g. http://127.0.0.1:7070 (empty: AWS).
	Endpoint string
	// Region is the signing region, e.g. us-east-1.
	Region string
	// PathStyle selects path-style addressing (needed by most S3-compatible servers).
	PathStyle bool
}

// RegisterFlags registers --s3-endpoint, --s3-region and --s3-path-style on fs.
func (o *S3Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Endpoint, "s3-endpoint", o.Endpoint, "S3 endpoint URL for s3:// blob stores (e.g. http://minio:9000)")
	fs.StringVar(&o.Region, "s3-region", o.Region, "S3 region for s3:// blob stores")
	fs.BoolVar(&o.PathStyle, "s3-path-style", o.PathStyle, "use path-style S3 addressing for s3:// blob stores")
}

// Apply adds the options to an s3:// URL as query parameters it does not set already; other
// URLs are returned unchanged.
func (o S3Options) Apply(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("blob URL: %w", err)
	}
	if u.Scheme != "s3" {
		return rawURL, nil
	}
	q := u.Query()
	set := func(k, v string) {
		if v != "" && q.Get(k) == "" {
			q.Set(k, v)
		}
	}
	set("endpoint", o.Endpoint)
	set("region", o.Region)
	if o.PathStyle {
		set("use_path_style", strconv.FormatBool(true))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
