package pcstls

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
)

// HTTP serves h over TLS on ln, each request only if check(path, cert) permits it: a path
// check permits without a certificate (health probes) to anyone; every other path only to a
// client certificate of the CA that check permits — 401 without a valid certificate, 403 with
// one that is not permitted; the body says why.
func HTTP(ln net.Listener, h http.Handler, src *Source, check func(path string, cert *x509.Certificate) error) (net.Listener, http.Handler) {
	return tls.NewListener(ln, src.DeferredClientConfig("h2", "http/1.1")), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if check(r.URL.Path, nil) != nil {
			var chain []*x509.Certificate
			if r.TLS != nil {
				chain = r.TLS.PeerCertificates
			}
			leaf, err := src.VerifyClient(chain)
			if err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			if err := check(r.URL.Path, leaf); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
