package tlsreload

import "flag"

// KeyPairFlags are --tls-cert and --tls-key: the PEM files of the key pair a process serves
// as its server certificate and presents as its client certificate for mTLS. A binary with
// both a gRPC server and a client registers them once; both sides read the same values.
type KeyPairFlags struct {
	cert, key *flag.Flag
}

// RegisterKeyPairFlags registers --tls-cert and --tls-key on fs, or picks up the ones already
// registered there (so that grpcserver and grpcclient can both call it on one flag set).
func RegisterKeyPairFlags(fs *flag.FlagSet) *KeyPairFlags {
	return &KeyPairFlags{
		cert: sharedStringFlag(fs, "tls-cert", "PEM `file` of this process's certificate: served by its gRPC server and presented as the client certificate for mTLS"),
		key:  sharedStringFlag(fs, "tls-key", "PEM `file` of the private key of --tls-cert"),
	}
}

// Files returns the values of --tls-cert and --tls-key; a nil *KeyPairFlags returns "", "".
func (k *KeyPairFlags) Files() (certFile, keyFile string) {
	if k == nil {
		return "", ""
	}
	return k.cert.Value.String(), k.key.Value.String()
}

// sharedStringFlag defines a string flag unless fs already has it, and returns it.
func sharedStringFlag(fs *flag.FlagSet, name, usage string) *flag.Flag {
	if fs.Lookup(name) == nil {
		fs.String(name, "", usage)
	}
	return fs.Lookup(name)
}
