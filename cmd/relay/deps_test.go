package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestingInBinary keeps test support out of what operators run: a
// package that imports "testing" (a test harness reached through the demo,
// say) would put the testing package and its flags into the relay binary.
// The relay binary and the sample receiver are checked; the failure names
// the packages that import "testing" so the path is easy to cut.
func TestNoTestingInBinary(t *testing.T) {
	for _, pkg := range []string{".", "../receiver"} {
		out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		var importers []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			for _, imp := range fields[1:] {
				if imp == "testing" {
					importers = append(importers, fields[0])
				}
			}
		}
		if len(importers) > 0 {
			t.Errorf("%s links the testing package; imported by: %s", pkg, strings.Join(importers, ", "))
		}
	}
}
