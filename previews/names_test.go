package previews

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	tests := []struct {
		name          string
		key           Key
		project, host string
	}{
		{"plain", Key{"acme", "web", 7}, "byop-acme-web-pr-7", "pr-7.web.acme.localhost"},
		{"case and dots are folded", Key{"Octo-Org", "My.Site_v2", 12}, "byop-octo-org-my-site-v2-pr-12", "pr-12.my-site-v2.octo-org.localhost"},
		{"leading and trailing symbols dropped", Key{"-a-", "__r__", 1}, "byop-a-r-pr-1", "pr-1.r.a.localhost"},
		{"only symbols still a label", Key{"o", "...", 3}, "byop-o-x-pr-3", "pr-3.x.o.localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.Project(); got != tt.project {
				t.Errorf("Project() = %q, want %q", got, tt.project)
			}
			if got := tt.key.Host("LocalHost"); got != tt.host {
				t.Errorf("Host() = %q, want %q", got, tt.host)
			}
		})
	}
}

func TestLongNamesStayWithinDNSLimits(t *testing.T) {
	long := "a-very-long-repository-name-that-goes-on-and-on-and-on-past-sixty-three-characters"
	k := Key{"owner", long, 1}
	h := k.Host("example.com")
	for _, part := range strings.Split(h, ".") {
		if len(part) > 63 {
			t.Errorf("label %q is longer than 63", part)
		}
	}
	if p := k.Project(); len(p) > 63 {
		t.Errorf("project %q is too long", p)
	}
}

func TestURL(t *testing.T) {
	k := Key{"acme", "web", 7}
	if got := k.URL("localhost", 8081); got != "http://pr-7.web.acme.localhost:8081/" {
		t.Errorf("URL = %q", got)
	}
	if got := k.URL("previews.example.com", 80); got != "http://pr-7.web.acme.previews.example.com/" {
		t.Errorf("URL = %q", got)
	}
	if got := ImageRepository("127.0.0.1:5000/byop", "Acme", "Web.App"); got != "127.0.0.1:5000/byop/acme/web-app" {
		t.Errorf("ImageRepository = %q", got)
	}
}
