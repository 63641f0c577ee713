package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The pipeline's imports flow one way. These fences keep them so: the
// receiver must answer in milliseconds and never reach for the build or
// deploy machinery; the model knows nothing of the parts that act on it.
func TestImportFences(t *testing.T) {
	fences := map[string][]string{
		"webhook":   {"buildkit", "deployers", "gitsrc", "registry", "forge", "previews", "tasks/pipeline"},
		"tasks":     {"buildkit", "deployers", "gitsrc", "registry", "forge", "previews", "tasks/pipeline", "webhook"},
		"previews":  {"buildkit", "deployers", "gitsrc", "registry", "forge", "tasks", "webhook"},
		"config":    {"buildkit", "deployers", "gitsrc", "registry", "forge", "tasks", "webhook", "previews"},
		"buildkit":  {"deployers", "gitsrc", "registry", "forge", "tasks", "webhook", "previews"},
		"registry":  {"buildkit", "deployers", "gitsrc", "forge", "tasks", "webhook", "previews"},
		"deployers": {"buildkit", "gitsrc", "forge", "tasks", "webhook", "previews"},
		"gitsrc":    {"buildkit", "deployers", "registry", "forge", "tasks", "webhook", "previews"},
		"forge":     {"buildkit", "deployers", "gitsrc", "registry", "tasks", "webhook", "previews"},
	}
	const mod = "github.com/byop-dev/byop/"
	for pkg, banned := range fences {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		for _, b := range banned {
			for _, d := range deps {
				if d == mod+b || strings.HasPrefix(d, mod+b+"/") {
					t.Errorf("%s imports %s", pkg, d)
				}
			}
		}
	}
}
