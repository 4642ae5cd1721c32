package message

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// docSection is the generated part of docs/EVENTS.md that shows each
// event's Slack and Teams rendering.
var docSection = regexp.MustCompile(`(?s)<!-- begin messages -->\n.*<!-- end messages -->\n`)

// TestEventsDocShowsEveryRendering keeps docs/EVENTS.md's "Slack and
// Teams messages" section equal to what the default templates render from
// the mapper's golden payloads, with formats.platform_url set. go test
// ./message -update rewrites it.
func TestEventsDocShowsEveryRendering(t *testing.T) {
	r := renderer(t, Options{PlatformURL: platform})
	var b strings.Builder
	b.WriteString("<!-- begin messages -->\n")
	for _, ev := range guideEvents {
		p := goldenPayload(t, ev)
		fmt.Fprintf(&b, "#### `%s`\n\n", ev)
		for _, f := range []string{Slack, Teams} {
			body, err := r.Render(f, p)
			if err != nil {
				t.Fatal(err)
			}
			var text string
			if f == Slack {
				var m struct{ Text string }
				_ = json.Unmarshal(body, &m)
				text = m.Text
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, body, "", "  "); err != nil {
				t.Fatal(err)
			}
			if f == Slack {
				fmt.Fprintf(&b, "Slack (text: %s):\n\n", text)
			} else {
				b.WriteString("Teams:\n\n")
			}
			fmt.Fprintf(&b, "<details><summary>%s body</summary>\n\n```json\n%s\n```\n\n</details>\n\n", f, pretty.String())
		}
	}
	b.WriteString("<!-- end messages -->\n")
	const path = "../docs/EVENTS.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	loc := docSection.FindIndex(doc)
	if loc == nil {
		t.Fatalf("%s has no <!-- begin messages --> section", path)
	}
	if got := string(doc[loc[0]:loc[1]]); got != b.String() {
		if *rewrite {
			out := append(append(append([]byte{}, doc[:loc[0]]...), b.String()...), doc[loc[1]:]...)
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("%s: the Slack and Teams renderings are stale (run go test ./message -update)", path)
	}
}
