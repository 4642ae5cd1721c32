package message

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"
)

// Payload formats of a webhook.
const (
	// Raw sends the event's payload as it is: the admin guide's JSON.
	Raw = "raw"
	// Slack sends a Slack incoming-webhook message.
	Slack = "slack"
	// Teams sends a Microsoft Teams message with an Adaptive Card.
	Teams = "teams"
)

// Formats lists the payload formats, the default first.
var Formats = []string{Raw, Slack, Teams}

// Known reports whether f is a payload format ("" is not: callers that
// default it to raw do so themselves).
func Known(f string) bool { return slices.Contains(Formats, f) }

// Template overrides the default templates of one event type; an empty
// field keeps the default.
type Template struct {
	// Event is the event type, e.g. "repair_request.created".
	Event string `koanf:"event"`
	// Summary is the one-line summary: a text/template over the payload.
	Summary string `koanf:"summary"`
	// Link is the path (or a full URL) of the event's page on the platform,
	// appended to Options.PlatformURL: a text/template over the payload.
	// "-" shows no link for this event type.
	Link string `koanf:"link"`
}

// Options configure a Renderer.
type Options struct {
	// PlatformURL is the platform's base URL, e.g.
	// "https://smartmaintenance.example.com"; messages link to the
	// event's page below it. "" shows no links.
	PlatformURL string
	// Templates override the defaults, per event type.
	Templates []Template
	// LinkText is the label of the link; default "Open in SmartMaintenance".
	LinkText string
}

// DefaultLinkText labels a message's link.
const DefaultLinkText = "Open in SmartMaintenance"

// TemplateError is a template that does not parse, with the place it came
// from: Templates[Index], its Field ("summary" or "link").
type TemplateError struct {
	Index int
	Event string
	Field string
	Err   error
}

func (e *TemplateError) Error() string {
	return fmt.Sprintf("%s template of %s: %v", e.Field, e.Event, e.Err)
}

func (e *TemplateError) Unwrap() error { return e.Err }

// RenderError says that a message was rendered with the plain summary (or
// without its link) because a template failed on this payload.
type RenderError struct {
	Event string
	// Field is "summary", "link" or "payload" (the payload is not the
	// guide's JSON).
	Field string
	Err   error
}

func (e *RenderError) Error() string {
	if e.Field == "payload" {
		return fmt.Sprintf("payload of %s is not a JSON object; sent a plain summary: %v", e.Event, e.Err)
	}
	return fmt.Sprintf("%s template of %s failed; sent the plain %s: %v", e.Field, e.Event, e.Field, e.Err)
}

func (e *RenderError) Unwrap() error { return e.Err }

// Renderer renders payloads as messages. It is safe for concurrent use.
type Renderer struct {
	base     string
	linkText string
	events   map[string]*compiled
	generic  *compiled
}

// compiled is an event type's parsed templates.
type compiled struct {
	summary *template.Template
	link    *template.Template // nil: no link
	fields  []field
}

// funcs are the functions templates may call.
var funcs = template.FuncMap{
	"words": words,
	"upper": func(v any) string { return strings.ToUpper(str(v)) },
	"lower": func(v any) string { return strings.ToLower(str(v)) },
	"title": func(v any) string { return capitalise(str(v)) },
	"dots":  func(v any) string { return strings.ReplaceAll(str(v), ".", " ") },
	// time shows an RFC 3339 value in the zone of the optional second
	// one (.timestamp: the company's), else in UTC.
	"time": func(v any, zone ...any) string {
		var ref string
		if len(zone) > 0 {
			ref = str(zone[0])
		}
		return showTime(str(v), zoneOf(ref))
	},
}

// Default returns the renderer with the default templates and no links.
func Default() *Renderer {
	r, err := New(Options{})
	if err != nil {
		panic(err) // the defaults are tested
	}
	return r
}

// New parses the default templates and o's overrides. A template that
// does not parse is a *TemplateError.
func New(o Options) (*Renderer, error) {
	r := &Renderer{base: strings.TrimRight(o.PlatformURL, "/"), linkText: o.LinkText, events: map[string]*compiled{}}
	if r.linkText == "" {
		r.linkText = DefaultLinkText
	}
	if r.base != "" {
		u, err := url.Parse(r.base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("platform URL %q is not an absolute http(s) URL", o.PlatformURL)
		}
	}
	var err error
	if r.generic, err = compile("generic", genericSummary, "", nil); err != nil {
		return nil, err
	}
	for ev, d := range defaults {
		c, err := compile(ev, d.summary, d.link, d.fields)
		if err != nil {
			return nil, fmt.Errorf("default templates: %w", err)
		}
		r.events[ev] = c
	}
	for i, t := range o.Templates {
		c := r.events[t.Event]
		if c == nil {
			c = &compiled{summary: r.generic.summary}
		}
		next := *c
		if t.Summary != "" {
			if next.summary, err = parse(t.Event, "summary", t.Summary); err != nil {
				return nil, &TemplateError{Index: i, Event: t.Event, Field: "summary", Err: err}
			}
		}
		switch t.Link {
		case "":
		case "-":
			next.link = nil
		default:
			if next.link, err = parse(t.Event, "link", t.Link); err != nil {
				return nil, &TemplateError{Index: i, Event: t.Event, Field: "link", Err: err}
			}
		}
		r.events[t.Event] = &next
	}
	return r, nil
}

func compile(event, summary, link string, fields []field) (*compiled, error) {
	c := &compiled{fields: fields}
	var err error
	if c.summary, err = parse(event, "summary", summary); err != nil {
		return nil, &TemplateError{Index: -1, Event: event, Field: "summary", Err: err}
	}
	if link != "" {
		if c.link, err = parse(event, "link", link); err != nil {
			return nil, &TemplateError{Index: -1, Event: event, Field: "link", Err: err}
		}
	}
	return c, nil
}

// parse parses one template. A field the payload lacks is empty in
// {{with}} and {{if}}; printed, it makes the template fail (see execute).
func parse(event, field, src string) (*template.Template, error) {
	t, err := template.New(event + " " + field).Funcs(funcs).Parse(src)
	if err != nil {
		// "template: task.assigned summary:1: ..." says the name twice.
		msg := strings.TrimPrefix(err.Error(), "template: "+event+" "+field+":")
		return nil, errors.New(strings.TrimSpace(msg))
	}
	return t, nil
}

// payload is a decoded event payload.
type payload struct {
	event, company, timestamp string
	// m is the whole payload, what templates see; data its "data".
	m    map[string]any
	data map[string]any
	zone *time.Location
}

// decode reads body, the guide's payload.
func decode(body []byte) (payload, error) {
	var p payload
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&p.m); err != nil {
		return p, err
	}
	if p.m == nil {
		return p, errors.New("null")
	}
	p.event, _ = p.m["event"].(string)
	p.company, _ = p.m["company_name"].(string)
	p.timestamp, _ = p.m["timestamp"].(string)
	p.data, _ = p.m["data"].(map[string]any)
	p.zone = zoneOf(p.timestamp)
	return p, nil
}

// content is what a message shows, in plain text (each format escapes it).
type content struct {
	summary string
	context string
	facts   []fact
	link    string
}

type fact struct{ title, value string }

// Limits that keep every message within what Slack and Teams accept (a
// section's text is at most 3,000 characters, a field's 2,000, at most 10
// fields, a button's URL at most 3,000).
const (
	maxSummary = 1000
	maxValue   = 500
	maxFacts   = 10
	maxURL     = 3000
)

var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// content renders body's summary, context line, facts and link.
func (r *Renderer) content(body []byte) (content, error) {
	p, err := decode(body)
	if err != nil {
		return content{summary: "SmartMaintenance event"}, &RenderError{Event: "an event", Field: "payload", Err: err}
	}
	c := r.events[p.event]
	if c == nil {
		c = r.generic
	}
	var out content
	var warn error
	buf := bufs.Get().(*bytes.Buffer)
	defer bufs.Put(buf)
	buf.Reset()
	if err := execute(c.summary, buf, p.m); err != nil {
		warn = &RenderError{Event: p.event, Field: "summary", Err: err}
		buf.Reset()
		_ = r.generic.summary.Execute(buf, p.m) // reads .event and .company_name, with words and dots
	}
	out.summary = capitalise(oneLine(buf.String()))
	if test, _ := p.m["test"].(bool); test {
		// The guide flags test events in the payload so that an endpoint
		// can tell them; a channel's readers see the message alone.
		out.summary = testMark + out.summary
	}
	out.summary = clip(out.summary, maxSummary)
	if c.link != nil && r.base != "" {
		buf.Reset()
		if err := execute(c.link, buf, p.m); err != nil {
			if warn == nil {
				warn = &RenderError{Event: p.event, Field: "link", Err: err}
			}
		} else if link := r.url(strings.TrimSpace(buf.String())); link != "" {
			out.link = link
		}
	}
	out.context = contextLine(p)
	fields := c.fields
	if fields == nil {
		fields = genericFields(p.data)
	}
	for _, f := range fields {
		v, ok := p.data[f.key]
		if !ok || v == nil {
			continue
		}
		s := show(v, f.kind, p.zone)
		if s == "" {
			continue
		}
		out.facts = append(out.facts, fact{f.label, clip(s, maxValue)})
		if len(out.facts) == maxFacts {
			break
		}
	}
	return out, warn
}

// testMark begins the summary of a test event's message.
const testMark = "[Test] "

// noValue is what text/template prints for a field the payload lacks.
const noValue = "<no value>"

// errMissing is a template that printed a field the payload lacks.
var errMissing = errors.New("it prints a field this payload lacks (use {{with .data.x}}...{{end}} for fields that may be absent)")

// execute runs t on m into buf; printing an absent field is an error.
func execute(t *template.Template, buf *bytes.Buffer, m map[string]any) error {
	if err := t.Execute(buf, m); err != nil {
		return err
	}
	if bytes.Contains(buf.Bytes(), []byte(noValue)) {
		return errMissing
	}
	return nil
}

// url joins the platform URL and a rendered link: a path, or a full URL.
func (r *Renderer) url(link string) string {
	if link == "" {
		return ""
	}
	s := link
	if !strings.HasPrefix(link, "http://") && !strings.HasPrefix(link, "https://") {
		if !strings.HasPrefix(link, "/") {
			link = "/" + link
		}
		s = r.base + link
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || len(s) > maxURL {
		return ""
	}
	return u.String()
}

// contextLine names the company, the event's time and type.
func contextLine(p payload) string {
	parts := make([]string, 0, 3)
	if p.company != "" {
		parts = append(parts, p.company)
	}
	if t := showTime(p.timestamp, p.zone); t != "" {
		parts = append(parts, t)
	}
	if p.event != "" {
		parts = append(parts, p.event)
	}
	return clip(oneLine(strings.Join(parts, " · ")), maxValue)
}

// genericFields shows every data field of an event type without defaults,
// in name order, labelled with its name in words.
func genericFields(data map[string]any) []field {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]field, 0, len(keys))
	for _, k := range keys {
		kind := kindText
		switch {
		case strings.HasSuffix(k, "_at"):
			kind = kindTime
		case strings.HasSuffix(k, "_id") || strings.HasSuffix(k, "_by"):
			kind = kindRef
		}
		out = append(out, field{words(k), k, kind})
	}
	return out
}

// show is a data value as a message shows it.
func show(v any, kind string, zone *time.Location) string {
	s := str(v)
	switch kind {
	case kindWords:
		return capitalise(words(s))
	case kindUpper:
		return strings.ToUpper(s)
	case kindTime:
		if t := showTime(s, zone); t != "" {
			return t
		}
	case kindRef:
		if _, ok := v.(json.Number); ok {
			return "#" + s
		}
	}
	if b, ok := v.(bool); ok {
		if b {
			return "yes"
		}
		return "no"
	}
	return oneLine(s)
}

// str is a payload value as text: strings as they are, numbers as written,
// anything else as JSON.
func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return string(v)
	case nil:
		return ""
	case bool:
		if v {
			return "true"
		}
		return "false"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// words turns a code into words: "in_review" -> "in review".
func words(v any) string { return strings.ReplaceAll(str(v), "_", " ") }

// capitalise makes the first letter upper case.
func capitalise(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 || unicode.IsUpper(r) {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

// oneLine folds runs of white space (line breaks included) into one space.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\u0085' }) &&
		!strings.Contains(s, "  ") {
		return strings.TrimSpace(s)
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
}

// clip cuts s to at most n characters, marking the cut with "…".
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for k := 0; k < n-1; k++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i] + "…"
}

// zoneOf is the fixed zone of an RFC 3339 time: the company's, in a
// payload's timestamp. UTC when there is none.
func zoneOf(ts string) *time.Location {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.UTC
	}
	_, off := t.Zone()
	if off == 0 {
		return time.UTC
	}
	return time.FixedZone("", off)
}

// showTime shows an RFC 3339 time in zone as "2026-04-24 09:15 +07:00"
// ("... UTC" in UTC); "" when s is not one.
func showTime(s string, zone *time.Location) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return ""
	}
	t = t.In(zone)
	if zone == time.UTC {
		return t.Format("2006-01-02 15:04") + " UTC"
	}
	return t.Format("2006-01-02 15:04 -07:00")
}

// Render returns the request body of payload in format: payload itself
// for Raw, a message for Slack and Teams. The error, when not nil, is a
// *RenderError: the body was still made (with the plain summary), and the
// error says which template failed. An unknown format is an error and no
// body.
func (r *Renderer) Render(format string, payload []byte) ([]byte, error) {
	switch format {
	case Raw, "":
		return payload, nil
	case Slack:
		c, warn := r.content(payload)
		return r.slack(c), warn
	case Teams:
		c, warn := r.content(payload)
		return r.teams(c), warn
	}
	return nil, fmt.Errorf("unknown payload format %q; one of %s", format, strings.Join(Formats, ", "))
}
