// Package tlsreload loads TLS certificates, keys and CA bundles from files and replaces them
// when the files change, so certificates rotated on disk (a Kubernetes Secret, cert-manager)
// are picked up without a restart. tls.Configs built here read the current material on every
// handshake.
package tlsreload

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// KeyPair is a certificate and its private key, loaded from PEM files and replaced by Reload
// when either file changes. A reload that fails (e.g. a half-written pair) keeps the previous
// pair.
type KeyPair struct {
	certPath, keyPath string
	cur               atomic.Pointer[tls.Certificate]

	mu                sync.Mutex // serialises Reload; guards lastCert, lastKey
	lastCert, lastKey []byte
}

// LoadKeyPair loads the pair from certPath and keyPath.
func LoadKeyPair(certPath, keyPath string) (*KeyPair, error) {
	if certPath == "" || keyPath == "" {
		return nil, fmt.Errorf("a TLS certificate needs both a certificate and a key file (got %q and %q)", certPath, keyPath)
	}
	k := &KeyPair{certPath: certPath, keyPath: keyPath}
	if _, err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// String describes the pair for logs.
func (k *KeyPair) String() string { return "TLS key pair " + k.certPath }

// Reload re-reads both files and swaps the pair in when either changed. It reports whether it
// did.
func (k *KeyPair) Reload() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	certPEM, err := os.ReadFile(k.certPath)
	if err != nil {
		return false, fmt.Errorf("read TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(k.keyPath)
	if err != nil {
		return false, fmt.Errorf("read TLS key: %w", err)
	}
	if k.lastCert != nil && bytes.Equal(certPEM, k.lastCert) && bytes.Equal(keyPEM, k.lastKey) {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("load TLS key pair %s, %s: %w", k.certPath, k.keyPath, err)
	}
	k.cur.Store(&cert)
	k.lastCert, k.lastKey = certPEM, keyPEM
	return true, nil
}

// Certificate returns the current certificate.
func (k *KeyPair) Certificate() *tls.Certificate { return k.cur.Load() }

// GetCertificate serves the current certificate (tls.Config.GetCertificate on servers).
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// GetClientCertificate serves the current certificate to a server asking for one
// (tls.Config.GetClientCertificate on clients). Clients have no reload loop, so it first
// re-reads the files; handshakes are rare (one per connection) and a failed reload keeps the
// previous pair.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	_, _ = k.Reload()
	return k.cur.Load(), nil
}
