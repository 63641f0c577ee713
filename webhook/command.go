package webhook

import (
	"strings"
)

// The slash commands byop obeys in pull-request comments.
const (
	CmdRedeploy = "redeploy"
	CmdRebuild  = "rebuild"
	CmdDestroy  = "destroy"
	CmdOKToTest = "ok-to-test"
	CmdHelp     = "help"
)

var commands = []string{CmdRedeploy, CmdRebuild, CmdDestroy, CmdOKToTest, CmdHelp}

// Command is what a comment asks of byop.
type Command struct {
	// Name is one of the Cmd constants.
	Name string
	// Unknown is set, with Name CmdHelp, when the comment addressed byop
	// ("/byop frobnicate") with a command it does not know.
	Unknown string
}

// ParseComment finds the command in a comment body. Commands stand alone at
// the start of a line, as "/redeploy" or "/byop redeploy", with text around
// them allowed. Lines inside fenced or indented code blocks and quoted
// ("> ...") lines are dropped first, so quoting someone's command does not
// run it. Slash words byop does not know ("/lgtm") belong to other bots and
// are ignored. The first command wins. It is a pure function.
func ParseComment(body string) (Command, bool) {
	for _, line := range liveLines(body) {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "/") {
			continue
		}
		word := strings.ToLower(strings.TrimPrefix(fields[0], "/"))
		if word == "byop" {
			if len(fields) == 1 {
				return Command{Name: CmdHelp}, true
			}
			sub := strings.ToLower(strings.TrimPrefix(fields[1], "/"))
			if known(sub) {
				return Command{Name: sub}, true
			}
			return Command{Name: CmdHelp, Unknown: fields[1]}, true
		}
		if known(word) {
			return Command{Name: word}, true
		}
	}
	return Command{}, false
}

func known(word string) bool {
	for _, c := range commands {
		if word == c {
			return true
		}
	}
	return false
}

// liveLines returns the comment's lines that are neither code nor quotes.
func liveLines(body string) []string {
	body = strings.ReplaceAll(body, "\r\n", "\n")
	var out []string
	fence := "" // the open fence ("```" or "~~~"), if inside one
	for _, line := range strings.Split(body, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, "```"):
			fence = "```"
		case strings.HasPrefix(trimmed, "~~~"):
			fence = "~~~"
		case strings.HasPrefix(trimmed, ">"):
		case strings.HasPrefix(line, "    "), strings.HasPrefix(line, "\t"):
			// an indented code block
		default:
			out = append(out, trimmed)
		}
	}
	return out
}
