// Package netaddr checks listen and advertise addresses: the address a process binds and the
// one it tells others to dial can differ (NAT, containers, a wildcard bind).
package netaddr

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// ErrAddress marks an unusable listen or advertise address.
var ErrAddress = errors.New("address")

// Check validates a listen address and its advertise address (empty: advertise the bound
// one). The advertise address must be host:port with a port and a host others can dial; a
// wildcard bind (0.0.0.0, ::, empty host) needs one, since the bound address names no host.
func Check(what, listen, advertise string) error {
	if advertise != "" {
		host, port, err := net.SplitHostPort(advertise)
		if err != nil {
			return fmt.Errorf("%w: advertise %s %q: %v", ErrAddress, what, advertise, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("%w: advertise %s %q: port must be 1..65535", ErrAddress, what, advertise)
		}
		if Wildcard(host) {
			return fmt.Errorf("%w: advertise %s %q: a wildcard address cannot be dialled; name this host", ErrAddress, what, advertise)
		}
		return nil
	}
	if listen == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrAddress, what, listen, err)
	}
	if Wildcard(host) {
		return fmt.Errorf("%w: %s %q binds every interface but names no host to dial; give the advertise address others should use", ErrAddress, what, listen)
	}
	return nil
}

// Wildcard reports whether host is empty or an unspecified IP.
func Wildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Addr is a net.Addr of an advertised address (which may be a host name).
type Addr string

func (a Addr) Network() string { return "tcp" }
func (a Addr) String() string  { return string(a) }

// Loopback reports whether a listen address binds only loopback.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
