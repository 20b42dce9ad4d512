package pcstls

import (
	"crypto/tls"
	"net"
	"net/http"
)

// HTTP serves h over TLS on ln: the paths in open (health probes) to anyone, every other
// path only to a client certificate of the CA that one of allow permits — 401 without a
// certificate, 403 with one that is not permitted.
func HTTP(ln net.Listener, h http.Handler, src *Source, open []string, allow ...*Allow) (net.Listener, http.Handler) {
	free := map[string]bool{}
	for _, p := range open {
		free[p] = true
	}
	return tls.NewListener(ln, src.OptionalClientConfig("h2", "http/1.1")), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !free[r.URL.Path] {
			if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
				http.Error(w, "a client certificate is required", http.StatusUnauthorized)
				return
			}
			if err := Permit(r.TLS.PeerCertificates[0], allow...); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
