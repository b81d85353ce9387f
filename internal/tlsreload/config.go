package tlsreload

import (
	"crypto/tls"
)

// ServerConfig returns a server tls.Config that presents the current certificate of kp and,
// when clientCAs is set, asks clients for a certificate and verifies the one given against the
// current bundle (tls.VerifyClientCertIfGiven: callers that authenticate with a bearer token
// instead need none; the auth layer decides which services require one).
func ServerConfig(kp *KeyPair, clientCAs *CertPool) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: kp.GetCertificate,
	}
	if clientCAs == nil {
		return base
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.ClientCAs = clientCAs.Pool()
		return c, nil
	}
	return base
}

// ClientConfig returns a client tls.Config that verifies the server against roots (nil: the
// system roots) and, when kp is set, presents its current certificate. serverName overrides
// the name verified (empty: the host of the target).
func ClientConfig(roots *CertPool, kp *KeyPair, serverName string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if roots != nil {
		c.RootCAs = roots.Pool()
	}
	if kp != nil {
		c.GetClientCertificate = kp.GetClientCertificate
	}
	return c
}
