package message

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/slack-go/slack"
)

var rewrite = flag.Bool("update", false, "rewrite the golden renderings and docs/EVENTS.md's section")

// guideEvents are the admin guide's 11 event types.
var guideEvents = []string{"task.assigned", "task.completed", "task.approved", "task.rejected",
	"repair_request.created", "repair_request.updated", "shutdown.reported", "shutdown.resolved",
	"user.created", "user.deactivated", "audit.exported"}

// goldenPayload reads the mapper's golden payload of event: exactly what the
// relay stores and sends raw.
func goldenPayload(t testing.TB, event string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "mapper", "testdata", "golden", event+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const platform = "https://smartmaintenance.example.com"

func renderer(t testing.TB, o Options) *Renderer {
	t.Helper()
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDefaultsCoverTheGuide(t *testing.T) {
	got := Events()
	slices.Sort(got)
	want := slices.Clone(guideEvents)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("default templates for %v, want %v", got, want)
	}
}

func TestRawIsThePayload(t *testing.T) {
	p := goldenPayload(t, "task.completed")
	for _, f := range []string{Raw, ""} {
		b, err := Default().Render(f, p)
		if err != nil || !bytes.Equal(b, p) || &b[0] != &p[0] {
			t.Errorf("Render(%q) = %s, %v; want the payload itself", f, b, err)
		}
	}
	if _, err := Default().Render("markdown", p); err == nil || !strings.Contains(err.Error(), "raw, slack, teams") {
		t.Errorf("unknown format: %v", err)
	}
}

// TestSlackMessagesMatchSlacksSchema renders every event, with and without
// a platform URL, and checks each against Slack's incoming-webhook message
// as github.com/slack-go/slack models it (nothing it does not know, no
// value of another type) and against Block Kit's documented limits.
func TestSlackMessagesMatchSlacksSchema(t *testing.T) {
	for _, base := range []string{"", platform} {
		r := renderer(t, Options{PlatformURL: base})
		for _, ev := range guideEvents {
			body, err := r.Render(Slack, goldenPayload(t, ev))
			if err != nil {
				t.Fatalf("%s: %v", ev, err)
			}
			msg := checkSlack(t, body)
			if base != "" && !strings.Contains(string(body), `"url":"`+platform+`/`) {
				t.Errorf("%s: no link to the platform: %s", ev, body)
			}
			if base == "" && strings.Contains(string(body), `"actions"`) {
				t.Errorf("%s: a link without a platform URL: %s", ev, body)
			}
			if !strings.Contains(msg.Text, "(PT Kahatex)") && !strings.Contains(msg.Text, "(Nordwerk GmbH)") {
				t.Errorf("%s: summary does not name the company: %q", ev, msg.Text)
			}
		}
	}
}

func TestSlackSummaryOfTheGuidesExample(t *testing.T) {
	p := []byte(`{"event":"repair_request.created","timestamp":"2026-04-24T09:15:30.987654+07:00","company_id":1,"company_name":"PT Kahatex",` +
		`"data":{"repair_request_id":431,"asset_id":678,"title":"Boiler 2 leaking","priority":"critical","status":"open","requested_by":3}}`)
	body, err := Default().Render(Slack, p)
	if err != nil {
		t.Fatal(err)
	}
	msg := checkSlack(t, body)
	if want := "Critical repair request #431 filed: Boiler 2 leaking (PT Kahatex)"; msg.Text != want {
		t.Errorf("text = %q, want %q", msg.Text, want)
	}
}

// checkSlack decodes body as a Slack incoming-webhook message and fails t
// unless encoding it again gives the same JSON (so it holds nothing Slack's
// model lacks) and every block is within Block Kit's limits.
func checkSlack(t *testing.T, body []byte) slack.WebhookMessage {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("not JSON: %s", body)
	}
	var msg slack.WebhookMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&msg); err != nil {
		t.Fatalf("not a Slack webhook message: %v\n%s", err, body)
	}
	again, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var sent, modelled map[string]any
	_ = json.Unmarshal(body, &sent)
	_ = json.Unmarshal(again, &modelled)
	delete(modelled, "replace_original") // always encoded by the model, never sent
	delete(modelled, "delete_original")
	if !reflect.DeepEqual(sent, modelled) {
		t.Fatalf("Slack's model of the message differs from it:\n sent %s\nmodel %s", body, again)
	}
	if msg.Text == "" || utf8.RuneCountInString(msg.Text) > 3000 {
		t.Errorf("text of %d characters", utf8.RuneCountInString(msg.Text))
	}
	if msg.Blocks == nil || len(msg.Blocks.BlockSet) == 0 || len(msg.Blocks.BlockSet) > 50 {
		t.Fatalf("blocks: %v", msg.Blocks)
	}
	for i, b := range msg.Blocks.BlockSet {
		switch b := b.(type) {
		case *slack.SectionBlock:
			if err := b.Text.Validate(); err != nil {
				t.Errorf("block %d text: %v", i, err)
			}
			if len(b.Fields) > 10 {
				t.Errorf("block %d: %d fields, at most 10", i, len(b.Fields))
			}
			for j, f := range b.Fields {
				if err := f.Validate(); err != nil || utf8.RuneCountInString(f.Text) > 2000 {
					t.Errorf("block %d field %d (%d characters): %v", i, j, utf8.RuneCountInString(f.Text), err)
				}
			}
		case *slack.ContextBlock:
			if n := len(b.ContextElements.Elements); n == 0 || n > 10 {
				t.Errorf("block %d: %d context elements", i, n)
			}
			for _, e := range b.ContextElements.Elements {
				if o, ok := e.(*slack.TextBlockObject); !ok || o.Validate() != nil {
					t.Errorf("block %d: context element %#v", i, e)
				}
			}
		case *slack.ActionBlock:
			for _, e := range b.Elements.ElementSet {
				btn, ok := e.(*slack.ButtonBlockElement)
				if !ok || btn.Text == nil || btn.Text.Type != "plain_text" || utf8.RuneCountInString(btn.Text.Text) > 75 ||
					btn.URL == "" || len(btn.URL) > 3000 {
					t.Errorf("block %d: action %#v", i, e)
				}
			}
		default:
			t.Errorf("block %d: unexpected %T", i, b)
		}
	}
	return msg
}

// TestSlackEscapes: values can neither break the JSON nor make Slack
// links, mentions or entities; limits hold for values of any size.
func TestSlackEscapes(t *testing.T) {
	title := `Boiler <!channel> & "valve" <https://evil.example|click> \ ` + "line\nbreak\ttab \u2028 \x01 \xff"
	p, _ := json.Marshal(map[string]any{"event": "repair_request.created", "timestamp": "2026-04-24T09:15:30.987654+07:00",
		"company_id": 1, "company_name": "A&B <Co>", "data": map[string]any{"repair_request_id": 431, "title": title,
			"priority": "critical", "status": strings.Repeat("open ", 1000)}})
	body, err := renderer(t, Options{PlatformURL: platform}).Render(Slack, p)
	if err != nil {
		t.Fatal(err)
	}
	msg := checkSlack(t, body)
	for _, bad := range []string{"<!channel>", "<https://", "A&B", "<Co>"} {
		if strings.Contains(msg.Text, bad) || strings.Contains(string(body), bad) {
			t.Errorf("%q not escaped: %s", bad, body)
		}
	}
	if !strings.Contains(msg.Text, "&lt;!channel&gt; &amp; \"valve\"") {
		t.Errorf("text = %q", msg.Text)
	}
	if strings.ContainsAny(msg.Text, "\n\t\x01") {
		t.Errorf("summary not on one line: %q", msg.Text)
	}
}

// TestTeamsLinksCannotHide: a value in Markdown's link syntax does not
// become a link whose text hides its address, in the heading, the context
// line or a fact; the text still reads the same.
func TestTeamsLinksCannotHide(t *testing.T) {
	bait := "[Reset your password](https://evil.example/login) **now**"
	p, _ := json.Marshal(map[string]any{"event": "repair_request.created", "timestamp": "2026-04-24T09:15:30.987654+07:00",
		"company_id": 1, "company_name": "[Co](https://evil.example)", "data": map[string]any{"repair_request_id": 431, "title": bait,
			"priority": "critical", "status": "open", "asset_id": "[a](https://evil.example)"}})
	body, err := renderer(t, Options{}).Render(Teams, p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), "](") {
		t.Errorf("link syntax left in %s", body)
	}
	var m struct {
		Attachments []struct {
			Content struct {
				Body []struct {
					Text  string
					Facts []struct{ Title, Value string }
				}
			}
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	card := m.Attachments[0].Content.Body
	shown := strings.ReplaceAll(card[0].Text+card[1].Text, "\u200b", "")
	if !strings.Contains(shown, bait) || !strings.Contains(shown, "[Co](https://evil.example)") {
		t.Errorf("the text does not read as written: %q", shown)
	}
	facts := 0
	for _, f := range card[2].Facts {
		if strings.Contains(f.Value, "](") {
			t.Errorf("fact %q: %q", f.Title, f.Value)
		}
		facts++
	}
	if facts == 0 {
		t.Errorf("no facts in %s", body)
	}
}

// TestTestEventsSayTheyAreTests: a test event's message (its payload has
// "test": true) begins with [Test] in both formats; a real event's does not.
func TestTestEventsSayTheyAreTests(t *testing.T) {
	real := goldenPayload(t, "repair_request.created")
	var m map[string]any
	if err := json.Unmarshal(real, &m); err != nil {
		t.Fatal(err)
	}
	m["test"] = true
	test, _ := json.Marshal(m)
	r := renderer(t, Options{})
	for _, f := range []string{Slack, Teams} {
		for _, c := range []struct {
			payload []byte
			want    bool
		}{{real, false}, {test, true}} {
			body, err := r.Render(f, c.payload)
			if err != nil {
				t.Fatal(err)
			}
			var summary string
			if f == Slack {
				summary = checkSlack(t, body).Text
			} else {
				var card struct {
					Attachments []struct {
						Content struct{ Body []struct{ Text string } }
					}
				}
				if err := json.Unmarshal(body, &card); err != nil {
					t.Fatal(err)
				}
				summary = card.Attachments[0].Content.Body[0].Text
			}
			if strings.HasPrefix(summary, "[Test] ") != c.want {
				t.Errorf("%s, test %v: summary %q", f, c.want, summary)
			}
		}
	}
}

// TestTeamsMessagesMatchTheAdaptiveCardSchema validates every event's card
// against the published Adaptive Card schema, and decodes the message
// strictly into the parts of a Teams message and of Adaptive Cards 1.4 the
// relay uses.
func TestTeamsMessagesMatchTheAdaptiveCardSchema(t *testing.T) {
	schema := adaptiveCardSchema(t)
	for _, base := range []string{"", platform} {
		r := renderer(t, Options{PlatformURL: base})
		for _, ev := range guideEvents {
			body, err := r.Render(Teams, goldenPayload(t, ev))
			if err != nil {
				t.Fatalf("%s: %v", ev, err)
			}
			card := checkTeams(t, schema, body)
			if (base != "") != (len(card.Actions) == 1) {
				t.Errorf("%s: actions %v with platform URL %q", ev, card.Actions, base)
			}
		}
	}
	// And a payload whose values try to break out.
	p, _ := json.Marshal(map[string]any{"event": "task.rejected", "timestamp": "2026-04-24T09:15:30Z", "company_id": 1,
		"company_name": "Q\"uote", "data": map[string]any{"task_id": 1, "title": "}]}\"x\u2029\\", "rejection_reason": strings.Repeat("long ", 2000)}})
	body, err := Default().Render(Teams, p)
	if err != nil {
		t.Fatal(err)
	}
	checkTeams(t, schema, body)
}

func adaptiveCardSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "adaptive-card.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	const loc = "http://adaptivecards.io/schemas/adaptive-card.json"
	if err := c.AddResource(loc, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(loc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The parts of a Teams message the relay sends, for a strict decoding:
// each property is one Adaptive Cards 1.4 (or the Teams message envelope)
// defines, with the values it allows.
type (
	teamsMessage struct {
		Type        string            `json:"type"`
		Attachments []teamsAttachment `json:"attachments"`
	}
	teamsAttachment struct {
		ContentType string  `json:"contentType"`
		ContentURL  *string `json:"contentUrl"`
		Content     card    `json:"content"`
	}
	card struct {
		Schema  string         `json:"$schema"`
		Type    string         `json:"type"`
		Version string         `json:"version"`
		Body    []cardElement  `json:"body"`
		Actions []cardAction   `json:"actions"`
		MSTeams map[string]any `json:"msteams"`
	}
	cardElement struct {
		Type     string     `json:"type"`
		Text     *string    `json:"text"`
		Weight   string     `json:"weight"`
		Size     string     `json:"size"`
		Wrap     bool       `json:"wrap"`
		IsSubtle bool       `json:"isSubtle"`
		Spacing  string     `json:"spacing"`
		Facts    []cardFact `json:"facts"`
	}
	cardFact struct {
		Title string `json:"title"`
		Value string `json:"value"`
	}
	cardAction struct {
		Type  string `json:"type"`
		Title string `json:"title"`
		URL   string `json:"url"`
	}
)

func checkTeams(t *testing.T, schema *jsonschema.Schema, body []byte) card {
	t.Helper()
	var m teamsMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("not a Teams message: %v\n%s", err, body)
	}
	if m.Type != "message" || len(m.Attachments) != 1 || m.Attachments[0].ContentType != "application/vnd.microsoft.card.adaptive" {
		t.Fatalf("envelope: %s", body)
	}
	c := m.Attachments[0].Content
	if c.Type != "AdaptiveCard" || c.Version != "1.4" || c.Schema != "http://adaptivecards.io/schemas/adaptive-card.json" {
		t.Errorf("card: %s", body)
	}
	if !reflect.DeepEqual(c.MSTeams, map[string]any{"width": "Full"}) {
		t.Errorf("msteams: %v", c.MSTeams)
	}
	for i, e := range c.Body {
		switch e.Type {
		case "TextBlock":
			if e.Text == nil || *e.Text == "" || e.Facts != nil || !e.Wrap {
				t.Errorf("body[%d]: %+v", i, e)
			}
			if !oneOf(e.Weight, "", "default", "lighter", "bolder") || !oneOf(e.Size, "", "small", "default", "medium", "large", "extraLarge") ||
				!oneOf(e.Spacing, "", "none", "small", "default", "medium", "large", "extraLarge", "padding") {
				t.Errorf("body[%d]: %+v", i, e)
			}
		case "FactSet":
			if e.Text != nil || len(e.Facts) == 0 || len(e.Facts) > 10 {
				t.Errorf("body[%d]: %+v", i, e)
			}
		default:
			t.Errorf("body[%d]: element %q", i, e.Type)
		}
	}
	for i, a := range c.Actions {
		if a.Type != "Action.OpenUrl" || a.Title == "" || !strings.HasPrefix(a.URL, "https://") {
			t.Errorf("actions[%d]: %+v", i, a)
		}
	}
	content, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	inst := raw["attachments"].([]any)[0].(map[string]any)["content"]
	if err := schema.Validate(inst); err != nil {
		t.Errorf("card does not match the Adaptive Card schema: %v\n%s", err, content)
	}
	return c
}

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }

// TestFailingTemplateFallsBack: a template that fails on a payload still
// yields a valid message, with the plain summary, and says which template.
func TestFailingTemplateFallsBack(t *testing.T) {
	r := renderer(t, Options{PlatformURL: platform, Templates: []Template{
		{Event: "task.completed", Summary: `Done: {{.data.no_such_field}}`},
		{Event: "task.approved", Summary: `{{.data.title.deeper}}`},
		{Event: "task.rejected", Link: `/t/{{.data.nothing}}`},
	}})
	for _, tc := range []struct{ event, field, text string }{
		{"task.completed", "summary", "Task completed (PT Kahatex)"},
		{"task.approved", "summary", "Task approved (PT Kahatex)"},
		{"task.rejected", "link", "Task #12345 rejected: Replace drive belt &amp; tensioner (PT Kahatex)"},
	} {
		body, err := r.Render(Slack, goldenPayload(t, tc.event))
		var re *RenderError
		if !errors.As(err, &re) || re.Field != tc.field || re.Event != tc.event {
			t.Errorf("%s: error %v, want a RenderError of its %s", tc.event, err, tc.field)
		}
		if msg := checkSlack(t, body); msg.Text != tc.text {
			t.Errorf("%s: text %q, want %q", tc.event, msg.Text, tc.text)
		}
	}
	// Not JSON at all: still a message.
	body, err := r.Render(Teams, []byte("not json"))
	if err == nil || body == nil {
		t.Fatalf("Render of garbage = %s, %v", body, err)
	}
	checkTeams(t, adaptiveCardSchema(t), body)
}

func TestOverrides(t *testing.T) {
	r := renderer(t, Options{PlatformURL: platform + "/", LinkText: "Open", Templates: []Template{
		{Event: "repair_request.created", Summary: `{{upper .data.priority}}: {{.data.title}} at {{time .data.nothing_there}}{{time .timestamp .timestamp}}`,
			Link: `https://other.example.com/rr?id={{.data.repair_request_id}}`},
		{Event: "task.completed", Link: "-"},
	}})
	body, _ := r.Render(Slack, goldenPayload(t, "repair_request.created"))
	msg := checkSlack(t, body)
	if want := "CRITICAL: Loom 12 vibrates above 300 rpm at 2026-04-24 09:15 +07:00"; msg.Text != want {
		t.Errorf("text %q, want %q", msg.Text, want)
	}
	if !strings.Contains(string(body), `"url":"https://other.example.com/rr?id=3021"`) || !strings.Contains(string(body), `"text":"Open"`) {
		t.Errorf("link: %s", body)
	}
	body, _ = r.Render(Slack, goldenPayload(t, "task.completed"))
	if strings.Contains(string(body), `"actions"`) {
		t.Errorf("link \"-\" still links: %s", body)
	}
}

func TestNewRefusesBadTemplates(t *testing.T) {
	_, err := New(Options{Templates: []Template{{Event: "task.completed"}, {Event: "task.completed", Summary: "{{.data.x"}}})
	var te *TemplateError
	if !errors.As(err, &te) || te.Index != 1 || te.Field != "summary" || strings.Contains(te.Err.Error(), "template:") {
		t.Errorf("err = %v", err)
	}
	if _, err := New(Options{PlatformURL: "example.com"}); err == nil {
		t.Error("a relative platform URL was taken")
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "\x00\x1f\x7f", "\u2028\u2029", "\xff\xfe ok", "日本語 · emoji 🚧", "<&>"} {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: %s is not JSON: %v", s, got, err)
		}
		ref, _ := json.Marshal(s)
		var want string
		_ = json.Unmarshal(ref, &want)
		if back != want {
			t.Errorf("%q round-trips as %q", s, back)
		}
	}
}
