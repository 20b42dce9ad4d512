// Package pcstls is mutual TLS for every PCS link: client↔PCS, PCS↔PCS (gRPC and Raft),
// data node↔PCS, data node↔data node and HTTP.
//
// A process has one identity — a CA bundle, its certificate chain and its key, as PEM files —
// that it presents both as a server and as a client, so a certificate needs the serverAuth and
// clientAuth key usages (pcsctl cert issues such certificates). The files are checked for
// changes at every handshake and re-read when they changed, so a certificate rotated on disk is
// used by the next connection without a restart; a rewrite caught half-way is not taken (the
// previous certificate stays until the files load again).
//
// Who may connect is decided by Allow lists of identities (a certificate's subject common name,
// DNS names, IP addresses or URIs), one per kind of caller: PCS peers, data nodes and clients.
package pcstls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrTLS marks every error of this package: a file that does not load, an expired
// certificate, an identity that is not allowed.
var ErrTLS = errors.New("tls")

// ErrNotAllowed is returned when a verified certificate names no allowed identity.
var ErrNotAllowed = fmt.Errorf("%w: certificate identity not allowed", ErrTLS)

// Files names the PEM files of a process's TLS identity.
type Files struct {
	// CA is the bundle of certificate authorities that sign the other side's certificates.
	CA string
	// Cert is this process's certificate chain, Key its private key.
	Cert, Key string
}

// Enabled reports whether any file is named (TLS is on).
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate reports whether the files are named all three or none.
func (f Files) Validate() error {
	if !f.Enabled() {
		return nil
	}
	var missing []string
	for _, m := range []struct{ name, v string }{{"CA", f.CA}, {"certificate", f.Cert}, {"key", f.Key}} {
		if m.v == "" {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: mutual TLS needs a CA, a certificate and a key; missing %s", ErrTLS, strings.Join(missing, ", "))
	}
	return nil
}

// material is one load of the files.
type material struct {
	cert  tls.Certificate
	leaf  *x509.Certificate
	pool  *x509.CertPool
	stamp string // sizes and modification times of the three files
}

// Source is a TLS identity loaded from Files and re-read when they change. It is safe for
// concurrent use.
type Source struct {
	files Files
	now   func() time.Time
	// OnReload, if set, is told of every reload: err nil when new files were taken, non-nil
	// when changed files failed to load (the previous ones stay in use).
	onReload func(err error)

	mu  sync.Mutex
	cur *material
	// failed is the stamp of files that failed to load, not retried until they change again.
	failed string
}

// Option configures a Source.
type Option func(*Source)

// WithReloadHook calls f after each reload attempt of changed files (for logs and metrics).
func WithReloadHook(f func(err error)) Option { return func(s *Source) { s.onReload = f } }

// WithReloadLog logs every reload of changed files to log.
func WithReloadLog(log *slog.Logger) Option {
	return func(s *Source) {
		s.onReload = func(err error) {
			if err != nil {
				log.Error("changed TLS files did not load; the previous certificate stays in use", "err", err)
			} else {
				log.Info("TLS files reloaded", "cert", s.files.Cert)
			}
		}
	}
}

// NewSource loads the files now: any that does not load, a key that does not match the
// certificate, or a certificate out of its validity period is an error.
func NewSource(f Files, opts ...Option) (*Source, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, fmt.Errorf("%w: no CA, certificate or key named", ErrTLS)
	}
	s := &Source{files: f, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur = m
	return s, nil
}

// Files returns the files the source reads.
func (s *Source) Files() Files { return s.files }

// Leaf returns the certificate currently presented.
func (s *Source) Leaf() *x509.Certificate { return s.current().leaf }

func (s *Source) stamp() (string, error) {
	var b strings.Builder
	for _, p := range []string{s.files.CA, s.files.Cert, s.files.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrTLS, err)
		}
		fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (s *Source) load() (*material, error) {
	stamp, err := s.stamp()
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return nil, fmt.Errorf("%w: reading CA: %v", ErrTLS, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrTLS, s.files.CA)
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: loading certificate %s and key %s: %v", ErrTLS, s.files.Cert, s.files.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: parsing certificate %s: %v", ErrTLS, s.files.Cert, err)
		}
		cert.Leaf = leaf
	}
	now := s.now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: certificate %s (%s) expired at %s", ErrTLS, s.files.Cert, Identity(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: certificate %s (%s) is not valid before %s", ErrTLS, s.files.Cert, Identity(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &material{cert: cert, leaf: leaf, pool: pool, stamp: stamp}, nil
}

// current returns the loaded material, re-reading the files first if they changed. Files that
// fail to load keep the material loaded before (NewSource made sure there is one).
func (s *Source) current() *material {
	s.mu.Lock()
	defer s.mu.Unlock()
	stamp, err := s.stamp()
	if err != nil || stamp == s.cur.stamp || stamp == s.failed {
		// A file missing for a moment (being replaced) keeps the loaded identity.
		return s.cur
	}
	m, err := s.load()
	if err != nil {
		s.failed = stamp
		if s.onReload != nil {
			s.onReload(err)
		}
		return s.cur
	}
	s.cur, s.failed = m, ""
	if s.onReload != nil {
		s.onReload(nil)
	}
	return m
}

// base is the settings every config shares.
func base() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

// ServerConfig returns a server configuration that requires a client certificate signed by the
// CA, re-reading the files at each handshake. If allow is not nil the handshake is also refused
// when the client's certificate names none of the identities it permits. nextProtos are the
// ALPN protocols offered ("h2" for gRPC).
func (s *Source) ServerConfig(allow *Allow, nextProtos ...string) *tls.Config {
	cfg := base()
	cfg.NextProtos = nextProtos
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := s.current()
		c := base()
		c.NextProtos = nextProtos
		c.Certificates = []tls.Certificate{m.cert}
		c.ClientCAs = m.pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
		if allow != nil {
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				return allow.Check(leafOf(cs))
			}
		}
		return c, nil
	}
	return cfg
}

// DeferredClientConfig is ServerConfig for a port that asks for a client certificate but
// leaves checking it to the application (VerifyClient), so that a caller with no certificate,
// one of another CA or an expired one is told why in the protocol's own error (a gRPC status,
// an HTTP body) instead of a TLS alert that shows as a reset connection.
func (s *Source) DeferredClientConfig(nextProtos ...string) *tls.Config {
	cfg := s.ServerConfig(nil, nextProtos...)
	get := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := get(h)
		if err == nil {
			c.ClientAuth = tls.RequestClientCert
		}
		return c, err
	}
	return cfg
}

// VerifyClient checks a client's certificate chain (leaf first) against the CA, for client
// authentication, and returns the leaf.
func (s *Source) VerifyClient(chain []*x509.Certificate) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no client certificate (give one with --tls-cert and --tls-key)", ErrTLS)
	}
	m := s.current()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.pool, Intermediates: inter, CurrentTime: s.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("%w: client certificate %s refused: %v", ErrTLS, Identity(leaf), err)
	}
	return leaf, nil
}

// ClientConfig returns a client configuration for one handshake with serverName (a host name
// or IP address the server's certificate must name), presenting this process's certificate.
// If allow is not nil the server's certificate must also name an identity it permits.
func (s *Source) ClientConfig(serverName string, allow *Allow, nextProtos ...string) *tls.Config {
	m := s.current()
	c := base()
	c.NextProtos = nextProtos
	c.ServerName = serverName
	c.RootCAs = m.pool
	// Always present the certificate, even when the server's list of acceptable CAs does not
	// name its issuer, so that the server can say why it refuses it.
	cert := m.cert
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	if allow != nil {
		c.VerifyConnection = func(cs tls.ConnectionState) error { return allow.Check(leafOf(cs)) }
	}
	return c
}

func leafOf(cs tls.ConnectionState) *x509.Certificate {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	return cs.PeerCertificates[0]
}

// Allow is a list of permitted identities. An entry matches a certificate's subject common
// name, a DNS name, an IP address or a URI of it, exactly or as a path.Match pattern
// ("node-*", "*.db.example.com"). An empty list permits every certificate the CA signed.
type Allow struct {
	// Kind names the callers the list is for ("peers", "nodes", "clients"), for errors.
	Kind     string
	Patterns []string
}

// NewAllow returns the list for kind, dropping empty entries; patterns are checked now.
func NewAllow(kind string, patterns []string) (*Allow, error) {
	a := &Allow{Kind: kind}
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("%w: allowed %s: bad pattern %q: %v", ErrTLS, kind, p, err)
		}
		a.Patterns = append(a.Patterns, p)
	}
	return a, nil
}

// Permits reports whether cert names an identity on the list.
func (a *Allow) Permits(cert *x509.Certificate) bool {
	if cert == nil {
		return false
	}
	if a == nil || len(a.Patterns) == 0 {
		return true
	}
	for _, name := range Names(cert) {
		for _, p := range a.Patterns {
			if ok, _ := path.Match(p, name); ok {
				return true
			}
		}
	}
	return false
}

// Check is Permits as an error that says who was refused and what is allowed.
func (a *Allow) Check(cert *x509.Certificate) error {
	if cert == nil {
		return fmt.Errorf("%w: no client certificate", ErrTLS)
	}
	if a.Permits(cert) {
		return nil
	}
	return fmt.Errorf("%w: %s is not among the allowed %s %v", ErrNotAllowed, Identity(cert), a.Kind, a.Patterns)
}

// Names returns the identities a certificate names: its common name, DNS names, IP addresses
// and URIs.
func Names(cert *x509.Certificate) []string {
	var ns []string
	if cert.Subject.CommonName != "" {
		ns = append(ns, cert.Subject.CommonName)
	}
	ns = append(ns, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		ns = append(ns, ip.String())
	}
	for _, u := range cert.URIs {
		ns = append(ns, u.String())
	}
	return slices.Compact(ns)
}

// Identity describes a certificate for errors and logs: "CN=pcs-1 (SAN pcs-1, 127.0.0.1)".
func Identity(cert *x509.Certificate) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "CN=%s", cert.Subject.CommonName)
	var sans []string
	sans = append(sans, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		sans = append(sans, ip.String())
	}
	for _, u := range cert.URIs {
		sans = append(sans, u.String())
	}
	if len(sans) > 0 {
		fmt.Fprintf(&b, " (SAN %s)", strings.Join(sans, ", "))
	}
	return b.String()
}
