package webhook

import "testing"

func TestParseComment(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Command
		ok   bool
	}{
		{"bare command", "/redeploy", Command{Name: CmdRedeploy}, true},
		{"with the bot's name", "/byop rebuild", Command{Name: CmdRebuild}, true},
		{"text around the command line", "Looks good.\n/ok-to-test\nthanks!", Command{Name: CmdOKToTest}, true},
		{"indented by a space and trailing words", "  /destroy please", Command{Name: CmdDestroy}, true},
		{"case does not matter", "/ReDeploy", Command{Name: CmdRedeploy}, true},
		{"windows line ends", "hi\r\n/help\r\n", Command{Name: CmdHelp}, true},
		{"first command wins", "/rebuild\n/destroy", Command{Name: CmdRebuild}, true},
		{"bot name alone asks for help", "/byop", Command{Name: CmdHelp}, true},
		{"unknown command for byop gets help", "/byop frobnicate", Command{Name: CmdHelp, Unknown: "frobnicate"}, true},
		{"another bot's command is ignored", "/lgtm", Command{}, false},
		{"Prow's /area is ignored", "/area kubectl", Command{}, false},
		{"not at the start of a line", "please /redeploy", Command{}, false},
		{"glued to a word", "/redeployed", Command{}, false},
		{"quoted command does not run", "> /destroy\nI disagree", Command{}, false},
		{"quoted hold then a real one", "> /destroy\n/redeploy", Command{Name: CmdRedeploy}, true},
		{"fenced code block", "```\n/destroy\n```", Command{}, false},
		{"tilde fence", "~~~sh\n/destroy\n~~~\n", Command{}, false},
		{"after a closed fence", "```\nx\n```\n/rebuild", Command{Name: CmdRebuild}, true},
		{"indented code block", "    /destroy", Command{}, false},
		{"tab-indented code block", "\t/destroy", Command{}, false},
		{"empty", "", Command{}, false},
		{"just a slash", "/", Command{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseComment(tt.body)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseComment(%q) = %+v, %v; want %+v, %v", tt.body, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseComment(f *testing.F) {
	for _, s := range []string{"/redeploy", "```\n/destroy", "> /x", "/byop help"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		c, ok := ParseComment(body)
		if ok != (c.Name != "") || (ok && !known(c.Name)) {
			t.Errorf("ParseComment(%q) = %+v, %v", body, c, ok)
		}
	})
}
