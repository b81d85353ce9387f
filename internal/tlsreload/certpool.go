package tlsreload

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// CertPool is a bundle of CA certificates loaded from a PEM file and replaced by Reload when
// the file changes.
type CertPool struct {
	path string
	cur  atomic.Pointer[x509.CertPool]

	mu   sync.Mutex // serialises Reload; guards last
	last []byte
}

// LoadCertPool loads the CA certificates of path (one or more PEM blocks).
func LoadCertPool(path string) (*CertPool, error) {
	p := &CertPool{path: path}
	if _, err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// String describes the bundle for logs.
func (p *CertPool) String() string { return "CA bundle " + p.path }

// Reload re-reads the file and swaps the pool in when it changed. It reports whether it did.
func (p *CertPool) Reload() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := os.ReadFile(p.path)
	if err != nil {
		return false, fmt.Errorf("read CA bundle: %w", err)
	}
	if p.last != nil && bytes.Equal(data, p.last) {
		return false, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return false, fmt.Errorf("CA bundle %s: no PEM certificate found", p.path)
	}
	p.cur.Store(pool)
	p.last = data
	return true, nil
}

// Pool returns the current pool.
func (p *CertPool) Pool() *x509.CertPool { return p.cur.Load() }
