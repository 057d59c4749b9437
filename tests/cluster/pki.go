package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the paths of the credentials of one test cluster; all of them
// live in DIR/pki and are created once, on the first serve.
type pki struct {
	dir string
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p pki) caCert() string     { return p.path("ca.crt") }
func (p pki) caKey() string      { return p.path("ca.key") }
func (p pki) serverCert() string { return p.path("apiserver.crt") }
func (p pki) serverKey() string  { return p.path("apiserver.key") }
func (p pki) adminCert() string  { return p.path("admin.crt") }
func (p pki) adminKey() string   { return p.path("admin.key") }
func (p pki) saKey() string      { return p.path("sa.key") }
func (p pki) saPub() string      { return p.path("sa.pub") }
func (p pki) tokenFile() string  { return p.path("tokens.csv") }
func (p pki) adminToken() string { return p.path("admin.token") }

const (
	adminUser  = "serin-admin"
	adminGroup = "system:masters"
)

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ensure creates whatever credential is missing. The CA signs the serving
// certificate (for 127.0.0.1, ::1 and localhost) and an admin client
// certificate; the admin bearer token is in the static token file.
func (p pki) ensure() error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	if !exists(p.caCert()) || !exists(p.caKey()) {
		key, err := newKey()
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			Subject:               pkix.Name{CommonName: "serin-testcluster-ca"},
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}
		der, err := sign(tmpl, tmpl, key.Public(), key)
		if err != nil {
			return err
		}
		if err := writeKey(p.caKey(), key); err != nil {
			return err
		}
		if err := writeCert(p.caCert(), der); err != nil {
			return err
		}
		// A new CA invalidates every certificate it signed before.
		for _, f := range []string{p.serverCert(), p.adminCert()} {
			_ = os.Remove(f)
		}
	}
	ca, caKey, err := p.loadCA()
	if err != nil {
		return err
	}
	if !exists(p.serverCert()) || !exists(p.serverKey()) {
		key, err := newKey()
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: "kube-apiserver"},
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
				"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		}
		der, err := sign(tmpl, ca, key.Public(), caKey)
		if err != nil {
			return err
		}
		if err := writeKey(p.serverKey(), key); err != nil {
			return err
		}
		if err := writeCert(p.serverCert(), der); err != nil {
			return err
		}
	}
	if !exists(p.adminCert()) || !exists(p.adminKey()) {
		key, err := newKey()
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: adminUser, Organization: []string{adminGroup}},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := sign(tmpl, ca, key.Public(), caKey)
		if err != nil {
			return err
		}
		if err := writeKey(p.adminKey(), key); err != nil {
			return err
		}
		if err := writeCert(p.adminCert(), der); err != nil {
			return err
		}
	}
	if !exists(p.saKey()) || !exists(p.saPub()) {
		key, err := newKey()
		if err != nil {
			return err
		}
		if err := writeKey(p.saKey(), key); err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return err
		}
		if err := writePEM(p.saPub(), "PUBLIC KEY", pub, 0o644); err != nil {
			return err
		}
	}
	if !exists(p.adminToken()) || !exists(p.tokenFile()) {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		token := hex.EncodeToString(b)
		if err := os.WriteFile(p.adminToken(), []byte(token+"\n"), 0o600); err != nil {
			return err
		}
		line := fmt.Sprintf("%s,%s,%s,%q\n", token, adminUser, adminUser, adminGroup)
		if err := os.WriteFile(p.tokenFile(), []byte(line), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (p pki) token() (string, error) {
	b, err := os.ReadFile(p.adminToken())
	if err != nil {
		return "", err
	}
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return string(b[:i]), nil
		}
	}
	return string(b), nil
}

func (p pki) loadCA() (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(p.caCert())
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		return nil, nil, fmt.Errorf("%s: no PEM data", p.caCert())
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(p.caKey())
	if err != nil {
		return nil, nil, err
	}
	blk, _ = pem.Decode(keyPEM)
	if blk == nil {
		return nil, nil, fmt.Errorf("%s: no PEM data", p.caKey())
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", p.caKey())
	}
	return cert, signer, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writeCert(path string, der []byte) error {
	return writePEM(path, "CERTIFICATE", der, 0o644)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
