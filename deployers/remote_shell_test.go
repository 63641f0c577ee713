package deployers

import (
	"bytes"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

var shellQuoteCases = []struct {
	name string
	argv []string
	want string
}{
	{"plain words stay as they are", []string{"docker", "ps", "-q", "--filter", "label=byop.project=x"}, "docker ps -q --filter label=byop.project=x"},
	{"empty string is an empty word", []string{"echo", ""}, "echo ''"},
	{"spaces", []string{"a b", " c "}, "'a b' ' c '"},
	{"single quote", []string{"it's"}, `'it'\''s'`},
	{"only a quote", []string{"'"}, `''\'''`},
	{"double quotes", []string{`say "hi"`}, `'say "hi"'`},
	{"command substitution", []string{"$(touch pwned)", "`id`"}, "'$(touch pwned)' '`id`'"},
	{"variables", []string{"$HOME", "${PATH}"}, "'$HOME' '${PATH}'"},
	{"newline", []string{"a\nb"}, "'a\nb'"},
	{"separators and redirections", []string{";", "&&", "|", ">", "<", "x;rm -rf /"}, "';' '&&' '|' '>' '<' 'x;rm -rf /'"},
	{"globs", []string{"*", "?", "[a]", "~"}, "'*' '?' '[a]' '~'"},
	{"backslash", []string{`a\b`, `\`}, `'a\b' '\'`},
	{"leading dash stays a word", []string{"--", "-rf"}, "-- -rf"},
	{"unicode", []string{"héllo wörld"}, "'héllo wörld'"},
	{"tab and carriage return", []string{"a\tb\r"}, "'a\tb\r'"},
}

func TestShellQuote(t *testing.T) {
	for _, tt := range shellQuoteCases {
		t.Run(tt.name, func(t *testing.T) {
			if got := shellQuote(tt.argv); got != tt.want {
				t.Errorf("shellQuote(%q) = %s, want %s", tt.argv, got, tt.want)
			}
		})
	}
}

// TestShellQuoteRoundTripsThroughARealShell hands each quoted line to sh,
// the way sshd hands a command to the login shell, and checks that the
// program receives exactly the argument vector byop meant.
func TestShellQuoteRoundTripsThroughARealShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh: %v", err)
	}
	// printf prints every argument NUL-terminated, so any byte but NUL
	// survives the trip and empty arguments are counted.
	extra := [][]string{
		{"'\"'\"'", `'\''`, "\\'", "$((1+1))", "!x", "#comment", "a=b c", "\x01\x7f"},
		{"", "", ""},
		{strings.Repeat("x' $y\n", 50)},
	}
	for _, tt := range shellQuoteCases {
		extra = append(extra, tt.argv)
	}
	for _, argv := range extra {
		line := shellQuote(append([]string{"printf", `%s\0`}, argv...))
		cmd := exec.Command(sh, "-c", line)
		cmd.Dir = t.TempDir() // a glob that escaped would match nothing here
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			t.Errorf("sh -c %s: %v", line, err)
			continue
		}
		got := strings.Split(out.String(), "\x00")
		got = got[:len(got)-1] // after the last NUL
		if !reflect.DeepEqual(got, argv) {
			t.Errorf("through sh, %q came back as %q (line %s)", argv, got, line)
		}
	}
}
