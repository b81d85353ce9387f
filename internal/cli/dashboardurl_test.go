package cli

import (
	"net"
	"testing"
)

// TestDashboardURL: the printed URL of `get --dashboard` is one a browser opens (an
// unspecified address becomes localhost, IPv6 is bracketed), and a listener other machines can
// reach is flagged (the dashboard has no authentication).
func TestDashboardURL(t *testing.T) {
	for _, c := range []struct {
		addr    string
		url     string
		exposed bool
	}{
		{"127.0.0.1:7490", "http://127.0.0.1:7490/", false},
		{"[::1]:7490", "http://[::1]:7490/", false},
		{"0.0.0.0:7490", "http://localhost:7490/", true},
		{"[::]:7490", "http://localhost:7490/", true},
		{"192.0.2.10:80", "http://192.0.2.10:80/", true},
		{"[2001:db8::5]:7490", "http://[2001:db8::5]:7490/", true},
	} {
		a, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		url, exposed := dashboardURL(a)
		if url != c.url || exposed != c.exposed {
			t.Errorf("%s: %q %v, want %q %v", c.addr, url, exposed, c.url, c.exposed)
		}
	}
}
