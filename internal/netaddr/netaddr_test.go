package netaddr

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		listen, advertise string
		ok                bool
	}{
		{"127.0.0.1:3379", "", true},
		{"127.0.0.1:0", "", true},
		{"0.0.0.0:3379", "", false},
		{":3379", "", false},
		{"[::]:3379", "", false},
		{"0.0.0.0:3379", "10.0.0.1:3379", true},
		{"0.0.0.0:3379", "pcs-1.example.com:3379", true},
		{"127.0.0.1:3379", "0.0.0.0:3379", false},
		{"127.0.0.1:3379", "10.0.0.1", false},
		{"127.0.0.1:3379", "10.0.0.1:0", false},
		{"127.0.0.1:3379", "10.0.0.1:x", false},
		{"nonsense", "", false},
	} {
		err := Check("client address", c.listen, c.advertise)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrAddress) {
			t.Errorf("Check(%q, %q) = %v, want ok=%v", c.listen, c.advertise, err, c.ok)
		}
	}
}
