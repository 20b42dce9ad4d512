package pcstls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/postdb/pcs/durable"
)

// CA is a certificate authority that issues certificates for a test or small deployment
// (pcsctl cert). Production deployments usually bring their own PKI.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM is the CA certificate as PEM, what every process's CA file holds.
	CertPEM []byte
}

// template is a certificate for cn valid for validity from a minute ago (clock skew), with a
// new key and serial.
func template(cn string, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"postdb"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
	}, key, nil
}

// NewCA makes a self-signed CA named cn, valid for validity from now.
func NewCA(cn string, validity time.Duration) (*CA, error) {
	tmpl, key, err := template(cn, validity)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA reads a CA written by WriteCA (ca.crt and ca.key in dir).
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTLS, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTLS, err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%w: %s: ca.crt or ca.key is not PEM", ErrTLS, dir)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: ca.crt: %v", ErrTLS, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: ca.key: %v", ErrTLS, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: %s/ca.crt is not a CA certificate", ErrTLS, dir)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

// Issued is a certificate and its key, as PEM.
type Issued struct {
	CertPEM, KeyPEM []byte
}

// Issue makes a certificate for cn, usable by a server and by a client, naming hosts as
// subject alternative names (IP addresses, DNS names or URIs); cn is a DNS name too.
func (ca *CA) Issue(cn string, hosts []string, validity time.Duration) (*Issued, error) {
	if cn == "" {
		return nil, errors.New("a certificate needs a name (CN)")
	}
	tmpl, key, err := template(cn, validity)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = []string{cn}
	for _, h := range hosts {
		switch ip, u := net.ParseIP(h), parseURI(h); {
		case h == "" || h == cn:
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case u != nil:
			tmpl.URIs = append(tmpl.URIs, u)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}, nil
}

func parseURI(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" && u.Opaque == "" {
		return nil
	}
	return u
}

// WriteCA writes ca.crt and ca.key (mode 0600) into dir.
func (ca *CA) WriteCA(dir string) error {
	kder, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

// Write writes name.crt and name.key (mode 0600) into dir and returns the files, with the CA
// file ca.crt of the same dir.
func (is *Issued) Write(dir, name string) (Files, error) {
	f := Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, err
	}
	if err := WriteFileAtomic(f.Key, is.KeyPEM, 0o600); err != nil {
		return Files{}, err
	}
	return f, WriteFileAtomic(f.Cert, is.CertPEM, 0o644)
}

// WriteFileAtomic writes data to a temporary file in path's directory, syncs it and renames
// it over path (syncing the directory), so that a reader sees the old file or the new one,
// never a part, also after a crash.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return durable.WriteFile(path, data, perm)
}
