package pcstls

import (
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteCA(dir); err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, dir, name string, validity time.Duration) Files {
	t.Helper()
	is, err := ca.Issue(name, []string{"127.0.0.1", "db.example.com", "spiffe://postdb/pcs/" + name}, validity)
	if err != nil {
		t.Fatal(err)
	}
	f, err := is.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func leaf(t *testing.T, f Files) *x509.Certificate {
	t.Helper()
	src, err := NewSource(f)
	if err != nil {
		t.Fatal(err)
	}
	return src.Leaf()
}

func TestAllow(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	cert := leaf(t, issue(t, ca, dir, "node-7", time.Hour))
	for _, c := range []struct {
		patterns []string
		want     bool
	}{
		{nil, true},                   // empty: any certificate of the CA
		{[]string{"", " "}, true},     // blanks dropped
		{[]string{"node-7"}, true},    // CN
		{[]string{"node-*"}, true},    // glob
		{[]string{"pcs-*"}, false},    // another kind
		{[]string{"127.0.0.1"}, true}, // IP SAN
		{[]string{"*.example.com"}, true},
		{[]string{"spiffe://postdb/pcs/node-7"}, true},
		{[]string{"node"}, false}, // no prefix matching
		{[]string{"pcs-1", "node-7"}, true},
	} {
		a, err := NewAllow("nodes", c.patterns)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Permits(cert); got != c.want {
			t.Errorf("%q permits %s: %v, want %v", c.patterns, Identity(cert), got, c.want)
		}
		if err := a.Check(cert); (err == nil) != c.want || err != nil && !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%q check: %v", c.patterns, err)
		}
	}
	if _, err := NewAllow("peers", []string{"pcs-["}); !errors.Is(err, ErrTLS) {
		t.Errorf("bad pattern: %v", err)
	}
	if (&Allow{}).Permits(nil) {
		t.Error("no certificate permitted")
	}
	if err := Permit(cert, &Allow{Kind: "peers", Patterns: []string{"pcs-*"}}, &Allow{Kind: "clients", Patterns: []string{"app"}}); err == nil ||
		!strings.Contains(err.Error(), "peers [pcs-*] or clients [app]") {
		t.Errorf("permit error does not name the lists: %v", err)
	}
}

func TestNewSourceRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	good := issue(t, ca, dir, "good", time.Hour)
	expired := issue(t, ca, dir, "expired", -time.Second) // NotAfter in the past
	other := issue(t, newCA(t, t.TempDir()), dir, "other", time.Hour)
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for _, c := range []struct {
		name string
		f    Files
		msg  string
	}{
		{"missing key", Files{CA: good.CA, Cert: good.Cert}, "missing key"},
		{"expired", expired, "expired"},
		{"key of another certificate", Files{CA: good.CA, Cert: good.Cert, Key: other.Key}, "private key does not match"},
		{"CA not PEM", Files{CA: garbage, Cert: good.Cert, Key: good.Key}, "no PEM certificate"},
		{"no such file", Files{CA: good.CA, Cert: filepath.Join(dir, "nope.crt"), Key: good.Key}, "no such file"},
	} {
		if _, err := NewSource(c.f); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.msg)
		}
	}
	if _, err := NewSource(good); err != nil {
		t.Fatal(err)
	}
}

// TestSourceReloadsRotatedFiles: a certificate rewritten on disk is the next one presented; a
// rewrite that does not load (caught half-way) keeps the previous one until the files load.
func TestSourceReloadsRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	f := issue(t, ca, dir, "pcs-1", time.Hour)
	var reloads []error
	src, err := NewSource(f, WithReloadHook(func(err error) { reloads = append(reloads, err) }))
	if err != nil {
		t.Fatal(err)
	}
	first := src.Leaf()
	// A certificate whose key is not yet written: not taken.
	is, err := ca.Issue("pcs-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(f.Cert, is.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if l := src.Leaf(); l.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("a certificate without its key was taken")
	}
	if len(reloads) != 1 || reloads[0] == nil {
		t.Fatalf("reloads %v, want one failure", reloads)
	}
	if err := WriteFileAtomic(f.Key, is.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	second := src.Leaf()
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the rotated certificate was not taken")
	}
	if len(reloads) != 2 || reloads[1] != nil {
		t.Fatalf("reloads %v, want a failure then a success", reloads)
	}
	// A handshake config carries the new certificate.
	c, _ := src.ClientConfig("127.0.0.1", nil).GetClientCertificate(nil)
	if c.Leaf.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatal("client config presents the old certificate")
	}
}

func TestVerifyClient(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	src, err := NewSource(issue(t, ca, dir, "pcs-1", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ok := leaf(t, issue(t, ca, dir, "app", time.Hour))
	if got, err := src.VerifyClient([]*x509.Certificate{ok}); err != nil || got != ok {
		t.Fatalf("valid client: %v", err)
	}
	otherDir := t.TempDir()
	stranger := leaf(t, issue(t, newCA(t, otherDir), otherDir, "app", time.Hour))
	if _, err := src.VerifyClient([]*x509.Certificate{stranger}); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("another CA: %v", err)
	}
	if _, err := src.VerifyClient(nil); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "no client certificate") {
		t.Errorf("no certificate: %v", err)
	}
	src.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := src.VerifyClient([]*x509.Certificate{ok}); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
}

func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	got, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) || !got.Key.Equal(ca.Key) {
		t.Fatal("loaded CA differs")
	}
	if _, err := LoadCA(t.TempDir()); !errors.Is(err, ErrTLS) {
		t.Fatalf("empty dir: %v", err)
	}
}

// FuzzAllow: any pattern list is refused or built, and Permits never panics on any name.
func FuzzAllow(f *testing.F) {
	f.Add("node-*", "node-1", "10.0.0.1")
	f.Add("*.example.com", "a.example.com", "spiffe://x/y")
	f.Add("[", "", "")
	f.Add("a\\", "a", "::1")
	f.Fuzz(func(t *testing.T, pattern, cn, host string) {
		a, err := NewAllow("nodes", strings.Split(pattern, ","))
		if err != nil {
			if !errors.Is(err, ErrTLS) {
				t.Fatalf("error not ErrTLS: %v", err)
			}
			return
		}
		cert := &x509.Certificate{DNSNames: []string{host}}
		cert.Subject.CommonName = cn
		if ip := net.ParseIP(host); ip != nil {
			cert.IPAddresses = []net.IP{ip}
		}
		if u, err := url.Parse(host); err == nil {
			cert.URIs = []*url.URL{u}
		}
		got := a.Permits(cert)
		if len(a.Patterns) == 0 && !got {
			t.Fatal("an empty list refused a certificate")
		}
		for _, p := range a.Patterns {
			if p == cn && !strings.ContainsAny(p, `*?[\`) && !got {
				t.Fatalf("pattern %q does not permit CN %q", p, cn)
			}
		}
	})
}
