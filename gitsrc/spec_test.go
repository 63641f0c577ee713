package gitsrc

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

const validSHA = "0123456789abcdef0123456789abcdef01234567"

func TestSpecValidate(t *testing.T) {
	ok := Spec{CloneURL: "https://github.com/o/r.git", SHA: validSHA}
	with := func(f func(*Spec)) Spec { s := ok; f(&s); return s }

	tests := []struct {
		name    string
		spec    Spec
		wantErr string // substring; "" means valid
		secret  string // must not appear in the error
	}{
		{name: "https URL and full sha are valid", spec: ok},
		{name: "http URL is valid", spec: with(func(s *Spec) { s.CloneURL = "http://127.0.0.1:8080/o/r.git" })},
		{name: "URL without .git is valid", spec: with(func(s *Spec) { s.CloneURL = "https://github.com/o/r" })},
		{name: "pull request ref is valid", spec: with(func(s *Spec) { s.Ref = "refs/pull/7/head" })},
		{name: "branch ref is valid", spec: with(func(s *Spec) { s.Ref = "refs/heads/feature/x" })},
		{name: "token is allowed", spec: with(func(s *Spec) { s.Token = "ghs_abc" })},

		{name: "short sha is rejected", spec: with(func(s *Spec) { s.SHA = "0123456" }), wantErr: "full 40-hex"},
		{name: "uppercase sha is rejected", spec: with(func(s *Spec) { s.SHA = strings.ToUpper(validSHA) }), wantErr: "lowercase"},
		{name: "non-hex sha is rejected", spec: with(func(s *Spec) { s.SHA = strings.Repeat("g", 40) }), wantErr: "40-hex"},
		{name: "41-char sha is rejected", spec: with(func(s *Spec) { s.SHA = validSHA + "0" }), wantErr: "40-hex"},
		{name: "zero sha is rejected", spec: with(func(s *Spec) { s.SHA = strings.Repeat("0", 40) }), wantErr: "zero"},
		{name: "empty URL is rejected", spec: with(func(s *Spec) { s.CloneURL = "" }), wantErr: "empty"},
		{name: "ssh URL is rejected", spec: with(func(s *Spec) { s.CloneURL = "ssh://github.com/o/r.git" }), wantErr: "not http or https"},
		{name: "ssh URL with user is rejected", spec: with(func(s *Spec) { s.CloneURL = "ssh://git@github.com/o/r.git" }), wantErr: "credentials"},
		{name: "scp-like URL is rejected", spec: with(func(s *Spec) { s.CloneURL = "git@github.com:o/r.git" }), wantErr: "not a valid URL"},
		{name: "file URL is rejected", spec: with(func(s *Spec) { s.CloneURL = "file:///srv/o/r.git" }), wantErr: "not http or https"},
		{name: "git protocol URL is rejected", spec: with(func(s *Spec) { s.CloneURL = "git://github.com/o/r.git" }), wantErr: "not http or https"},
		{
			name:    "credentials in URL are rejected without being repeated",
			spec:    with(func(s *Spec) { s.CloneURL = "https://x-access-token:ghs_leak@github.com/o/r.git" }),
			wantErr: "must not carry credentials", secret: "ghs_leak",
		},
		{
			name:    "user only in URL is rejected",
			spec:    with(func(s *Spec) { s.CloneURL = "https://ghs_leak@github.com/o/r.git" }),
			wantErr: "must not carry credentials", secret: "ghs_leak",
		},
		{
			name:    "query in URL is rejected without being repeated",
			spec:    with(func(s *Spec) { s.CloneURL = "https://github.com/o/r.git?access_token=ghs_leak" }),
			wantErr: "query", secret: "ghs_leak",
		},
		{
			name:    "unparsable URL is not repeated",
			spec:    with(func(s *Spec) { s.CloneURL = "https://u:ghs_leak@github.com/%zz" }),
			wantErr: "not a valid URL", secret: "ghs_leak",
		},
		{name: "URL without host is rejected", spec: with(func(s *Spec) { s.CloneURL = "https:///o/r.git" }), wantErr: "no host"},
		{name: "URL without repository is rejected", spec: with(func(s *Spec) { s.CloneURL = "https://github.com/" }), wantErr: "names no repository"},
		{name: "short ref name is rejected", spec: with(func(s *Spec) { s.Ref = "main" }), wantErr: "full ref name"},
		{name: "ref with .. is rejected", spec: with(func(s *Spec) { s.Ref = "refs/heads/a..b" }), wantErr: "full ref name"},
		{name: "wildcard ref is rejected", spec: with(func(s *Spec) { s.Ref = "refs/pull/*/head" }), wantErr: "full ref name"},
		{name: "refspec is rejected", spec: with(func(s *Spec) { s.Ref = "refs/heads/a:refs/heads/b" }), wantErr: "full ref name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("Validate() = %v, want it to wrap ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("Validate() = %q repeats the credential", err)
			}
		})
	}
}

func TestCacheKey(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want string
	}{
		{name: "github URL maps to host/owner/name", url: "https://github.com/octo/hello.git", want: "github.com/octo/hello.git"},
		{name: "URL without .git maps to the same key", url: "https://github.com/octo/hello", want: "github.com/octo/hello.git"},
		{name: "host case is ignored", url: "https://GitHub.com/octo/hello.git", want: "github.com/octo/hello.git"},
		{name: "nested groups are kept", url: "https://gitlab.example/group/sub/proj.git", want: "gitlab.example/group/sub/proj.git"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cacheKey(tt.url); got != filepath.FromSlash(tt.want) {
				t.Errorf("cacheKey(%q) = %q, want %q", tt.url, got, tt.want)
			}
		})
	}

	t.Run("unsafe parts are replaced and keys stay distinct", func(t *testing.T) {
		urls := []string{
			"http://127.0.0.1:8080/o/r.git",
			"http://127.0.0.1:8081/o/r.git",
			"https://example.com/o/r%20x.git",
			"https://example.com/o/r_x.git",
			"https://example.com/o/.hidden.git",
			"https://example.com/../../etc/r.git",
			"https://example.com/o/%2e%2e/r.git",
		}
		seen := map[string]string{}
		for _, u := range urls {
			key := cacheKey(u)
			if prev, dup := seen[key]; dup {
				t.Errorf("%q and %q share the cache key %q", prev, u, key)
			}
			seen[key] = u
			if !filepath.IsLocal(key) {
				t.Errorf("cacheKey(%q) = %q escapes the cache dir", u, key)
			}
			for _, part := range strings.Split(filepath.ToSlash(key), "/") {
				if strings.HasPrefix(part, ".") || strings.ContainsAny(part, ": %") {
					t.Errorf("cacheKey(%q) = %q has the unsafe part %q", u, key, part)
				}
			}
		}
	})
}
