package pcstls

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
)

// HTTP serves h over TLS on ln: the paths in open (health probes) to anyone, every other
// path only to a client certificate of the CA that one of allow permits — 401 without a
// valid certificate, 403 with one that is not permitted; the body says why.
func HTTP(ln net.Listener, h http.Handler, src *Source, open []string, allow ...*Allow) (net.Listener, http.Handler) {
	free := map[string]bool{}
	for _, p := range open {
		free[p] = true
	}
	return tls.NewListener(ln, src.DeferredClientConfig("h2", "http/1.1")), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !free[r.URL.Path] {
			var chain []*x509.Certificate
			if r.TLS != nil {
				chain = r.TLS.PeerCertificates
			}
			leaf, err := src.VerifyClient(chain)
			if err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			if err := Permit(leaf, allow...); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
