package tlsreload

import (
	"crypto/x509"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/paperfetch/paperfetch/internal/tlsreload/tlstest"
)

func leafSerial(t *testing.T, k *KeyPair) string {
	t.Helper()
	c, err := x509.ParseCertificate(k.Certificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

func TestKeyPairReload(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	first := ca.Issue(t, "one")
	certPath, keyPath := first.Write(t, dir, "srv")
	kp, err := LoadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := leafSerial(t, kp); got != first.Serial.String() {
		t.Fatalf("serial %s, want %s", got, first.Serial)
	}
	if changed, err := kp.Reload(); changed || err != nil {
		t.Fatalf("unchanged reload = %v, %v", changed, err)
	}
	second := ca.Issue(t, "two")
	second.Write(t, dir, "srv")
	if changed, err := kp.Reload(); !changed || err != nil {
		t.Fatalf("reload after rotation = %v, %v", changed, err)
	}
	if got := leafSerial(t, kp); got != second.Serial.String() {
		t.Fatalf("serial %s after rotation, want %s", got, second.Serial)
	}
	// A half-written pair (new cert, old key) is refused and the previous pair kept.
	tlstest.WriteFile(t, certPath, ca.Issue(t, "three").Cert)
	if _, err := kp.Reload(); err == nil {
		t.Fatal("mismatched pair reloaded without error")
	}
	if got := leafSerial(t, kp); got != second.Serial.String() {
		t.Fatalf("serial %s after failed reload, want %s", got, second.Serial)
	}
	c, err := kp.GetClientCertificate(nil)
	if err != nil || c == nil {
		t.Fatalf("GetClientCertificate = %v, %v", c, err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKeyPair("", ""); err == nil {
		t.Fatal("empty paths accepted")
	}
	if _, err := LoadKeyPair(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key")); err == nil {
		t.Fatal("missing files accepted")
	}
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCertPool(bad); err == nil {
		t.Fatal("CA bundle without certificates accepted")
	}
}

func TestCertPoolReload(t *testing.T) {
	dir := t.TempDir()
	ca1 := tlstest.NewCA(t, "ca1")
	path := ca1.WriteCA(t, dir, "ca")
	p, err := LoadCertPool(path)
	if err != nil {
		t.Fatal(err)
	}
	before := p.Pool()
	tlstest.NewCA(t, "ca2").WriteCA(t, dir, "ca")
	if changed, err := p.Reload(); !changed || err != nil {
		t.Fatalf("reload = %v, %v", changed, err)
	}
	if p.Pool() == before {
		t.Fatal("pool not replaced")
	}
}

func TestServerConfig(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	kp, err := LoadKeyPair(ca.Issue(t, "srv").Write(t, dir, "srv"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCertPool(ca.WriteCA(t, dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	c := ServerConfig(kp, pool)
	cc, err := c.GetConfigForClient(nil)
	if err != nil || cc.ClientCAs != pool.Pool() || cc.GetCertificate == nil {
		t.Fatalf("GetConfigForClient = %+v, %v", cc, err)
	}
	if ServerConfig(kp, nil).GetConfigForClient != nil {
		t.Fatal("no client CA: want no GetConfigForClient")
	}
}

func TestKeyPairFlagsShared(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	a := RegisterKeyPairFlags(fs)
	b := RegisterKeyPairFlags(fs) // a second registration picks up the same flags
	if err := fs.Parse([]string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*KeyPairFlags{a, b} {
		if c, key := k.Files(); c != "c.pem" || key != "k.pem" {
			t.Fatalf("Files() = %q, %q", c, key)
		}
	}
	var none *KeyPairFlags
	if c, key := none.Files(); c != "" || key != "" {
		t.Fatalf("nil Files() = %q, %q", c, key)
	}
}
