package deployers

import (
	"regexp"
	"strings"
)

// shellSafe matches words a POSIX shell reads back unchanged without quotes.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

// shellQuote renders an argument vector as one command line for a POSIX
// shell, the way sshd hands a command to the user's login shell. Every
// element becomes exactly one word, whatever it holds: quotes, spaces,
// newlines, "$(...)", globs or nothing at all. It is the only place byop
// builds a remote command line; callers pass argument vectors.
func shellQuote(argv []string) string {
	var b strings.Builder
	for i, arg := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quoteWord(arg))
	}
	return b.String()
}

// quoteWord quotes one word: single quotes keep everything literal, and a
// single quote inside is written as quote, backslash, quote, quote: it
// closes the quoted part, adds an escaped quote and opens a new part.
func quoteWord(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
