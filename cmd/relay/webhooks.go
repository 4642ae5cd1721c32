package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smartmaintenance/relay/admin"
)

const webhooksUsage = `usage: relay webhooks <command> [flags]   (over the admin API)

  list        [--company ID]
  create      --name N --endpoint URL --events a,b [--secret S] [--header "K: V"]... [--description D] [--inactive] [--company ID]
  update      ID [--name N] [--endpoint URL] [--events a,b] [--secret S | --rotate-secret] [--header "K: V"]... [--description D]
  enable      ID
  disable     ID
  delete      ID
  test        ID --event TYPE
  deliveries  ID [--status failed,retrying] [--from T] [--to T] [--limit N] [--cursor C]
  refire      ID --delivery UUID | --from T --to T

every command: --url URL (or RELAY_ADMIN_URL), --token TOKEN (or RELAY_ADMIN_TOKEN), --json
times are RFC 3339 (2026-04-24T09:15:30Z) or a duration before now (24h)
`

// apiFlags are the flags every API command takes.
type apiFlags struct {
	url, token string
	json       bool
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.url, "url", os.Getenv("RELAY_ADMIN_URL"), "admin API base URL (RELAY_ADMIN_URL)")
	fs.StringVar(&a.token, "token", os.Getenv("RELAY_ADMIN_TOKEN"), "admin token (RELAY_ADMIN_TOKEN)")
	fs.BoolVar(&a.json, "json", false, "print the API's JSON answer")
}

func (a *apiFlags) client() *admin.Client { return &admin.Client{URL: a.url, Token: a.token} }

// parseMixed parses flags that may come before and after positional
// arguments ("update 7 --name x") and returns the positional ones.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// headerList collects repeated --header "Name: value" flags.
type headerList map[string]string

func (h headerList) String() string { return "" }
func (h headerList) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("--header %q: want \"Name: value\"", v)
	}
	h[strings.TrimSpace(name)] = strings.TrimSpace(value)
	return nil
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(flagName, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, usageError{fmt.Errorf("--%s %q: want an RFC 3339 time (2026-04-24T09:15:30Z) or a duration before now (24h)", flagName, s)}
}

func cmdWebhooks(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("missing command\n" + webhooksUsage)}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("webhooks "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var a apiFlags
	a.register(fs)
	var (
		company                                   int64
		name, rawURL, events, secret, description string
		rotate, inactive                          bool
		event, status, from, to, cursor, delivery string
		limit                                     int
	)
	headers := headerList{}
	switch sub {
	case "list":
		fs.Int64Var(&company, "company", 0, "company id (operator tokens)")
	case "create", "update":
		fs.StringVar(&name, "name", "", "name")
		fs.StringVar(&rawURL, "endpoint", "", "the webhook's URL (--url is the admin API's)")
		fs.StringVar(&events, "events", "", "event types, comma-separated")
		fs.StringVar(&secret, "secret", "", "signing secret, at least 16 bytes (create: omit to have one generated)")
		fs.Var(headers, "header", `extra header "Name: value" (repeatable; update: replaces all headers)`)
		fs.StringVar(&description, "description", "", "description")
		if sub == "create" {
			fs.BoolVar(&inactive, "inactive", false, "create it disabled")
			fs.Int64Var(&company, "company", 0, "company id (operator tokens)")
		} else {
			fs.BoolVar(&rotate, "rotate-secret", false, "replace the secret with a generated one")
		}
	case "test":
		fs.StringVar(&event, "event", "", "event type")
	case "deliveries":
		fs.StringVar(&status, "status", "", "pending, retrying, delivered, failed (comma-separated)")
		fs.StringVar(&from, "from", "", "created at or after")
		fs.StringVar(&to, "to", "", "created before")
		fs.IntVar(&limit, "limit", 0, "page size (1 to 200)")
		fs.StringVar(&cursor, "cursor", "", "next_cursor of the previous page")
	case "refire":
		fs.StringVar(&delivery, "delivery", "", "delivery id (X-SMTM-Delivery)")
		fs.StringVar(&from, "from", "", "re-fire failed deliveries created at or after")
		fs.StringVar(&to, "to", "", "... and before")
	case "enable", "disable", "delete":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, webhooksUsage)
		return nil
	default:
		return usageError{fmt.Errorf("unknown command %q\n%s", sub, webhooksUsage)}
	}
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if a.url == "" || a.token == "" {
		return usageError{errors.New("the admin API needs --url and --token (or RELAY_ADMIN_URL and RELAY_ADMIN_TOKEN)")}
	}
	c := a.client()
	var id string
	if sub != "list" && sub != "create" {
		if len(pos) != 1 {
			return usageError{fmt.Errorf("webhooks %s: want one webhook id, got %d arguments", sub, len(pos))}
		}
		id = url.PathEscape(pos[0])
	} else if len(pos) != 0 {
		return usageError{fmt.Errorf("webhooks %s: unexpected argument %q", sub, pos[0])}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var out json.RawMessage
	switch sub {
	case "list":
		p := "/v1/webhooks"
		if company > 0 {
			p += fmt.Sprintf("?company_id=%d", company)
		}
		out, err = c.Do(ctx, "GET", p, nil)
	case "create", "update":
		body := map[string]any{}
		if set["name"] {
			body["name"] = name
		}
		if set["endpoint"] {
			body["url"] = rawURL
		}
		if set["events"] {
			body["events"] = splitList(events)
		}
		if set["secret"] {
			body["secret"] = secret
		}
		if set["header"] {
			body["headers"] = map[string]string(headers)
		}
		if set["description"] {
			body["description"] = description
		}
		if sub == "create" {
			if inactive {
				body["active"] = false
			}
			if company > 0 {
				body["company_id"] = company
			}
			out, err = c.Do(ctx, "POST", "/v1/webhooks", body)
		} else {
			if rotate {
				body["rotate_secret"] = true
			}
			out, err = c.Do(ctx, "PATCH", "/v1/webhooks/"+id, body)
		}
	case "enable", "disable":
		out, err = c.Do(ctx, "POST", "/v1/webhooks/"+id+"/"+sub, nil)
	case "delete":
		out, err = c.Do(ctx, "DELETE", "/v1/webhooks/"+id, nil)
		if err == nil {
			out = json.RawMessage(`{"deleted": true}`)
		}
	case "test":
		if event == "" {
			return usageError{errors.New("webhooks test: --event TYPE is required (relay events lists them)")}
		}
		out, err = c.Do(ctx, "POST", "/v1/webhooks/"+id+"/test", map[string]string{"event_type": event})
	case "deliveries":
		q := url.Values{}
		if status != "" {
			q.Set("status", status)
		}
		for flagName, v := range map[string]string{"from": from, "to": to} {
			if v != "" {
				t, err := parseWhen(flagName, v)
				if err != nil {
					return err
				}
				q.Set(flagName, t.UTC().Format(time.RFC3339Nano))
			}
		}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		p := "/v1/webhooks/" + id + "/deliveries"
		if len(q) > 0 {
			p += "?" + q.Encode()
		}
		out, err = c.Do(ctx, "GET", p, nil)
	case "refire":
		switch {
		case delivery != "" && (from != "" || to != ""):
			return usageError{errors.New("webhooks refire: give --delivery, or --from and --to, not both")}
		case delivery != "":
			out, err = c.Do(ctx, "POST", "/v1/webhooks/"+id+"/deliveries/"+url.PathEscape(delivery)+"/refire", nil)
		case from != "" && to != "":
			f, err := parseWhen("from", from)
			if err != nil {
				return err
			}
			t, err := parseWhen("to", to)
			if err != nil {
				return err
			}
			out, err = c.Do(ctx, "POST", "/v1/webhooks/"+id+"/refire", map[string]string{
				"from": f.UTC().Format(time.RFC3339Nano), "to": t.UTC().Format(time.RFC3339Nano)})
			if err != nil {
				return err
			}
		default:
			return usageError{errors.New("webhooks refire: --delivery UUID, or --from and --to, is required")}
		}
	}
	if err != nil {
		return err
	}
	if a.json {
		var buf bytes.Buffer
		if json.Indent(&buf, out, "", "  ") != nil {
			buf.Write(out)
		}
		fmt.Fprintln(stdout, strings.TrimSpace(buf.String()))
		return nil
	}
	return printHuman(stdout, sub, out)
}

type webhookJSON struct {
	ID             int64      `json:"id"`
	CompanyID      int64      `json:"company_id"`
	Name           string     `json:"name"`
	URL            string     `json:"url"`
	Events         []string   `json:"events"`
	Active         bool       `json:"active"`
	ManagedBy      string     `json:"managed_by"`
	LastFiredAt    *time.Time `json:"last_fired_at"`
	SuccessRate24h *float64   `json:"success_rate_24h"`
	Attempts24h    int        `json:"attempts_24h"`
}

func printHuman(w io.Writer, sub string, out json.RawMessage) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch sub {
	case "list":
		var v struct{ Webhooks []webhookJSON }
		if err := json.Unmarshal(out, &v); err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tCOMPANY\tNAME\tURL\tEVENTS\tLAST FIRED\tSUCCESS 24H\tACTIVE")
		for _, h := range v.Webhooks {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.CompanyID, h.Name, h.URL, shortList(h.Events),
				when(h.LastFiredAt), rate(h.SuccessRate24h, h.Attempts24h), onOff(h.Active, h.ManagedBy))
		}
	case "create", "update", "enable", "disable":
		var v struct {
			Webhook  webhookJSON
			Secret   string
			Warnings []string
		}
		if err := json.Unmarshal(out, &v); err != nil {
			return err
		}
		h := v.Webhook
		fmt.Fprintf(tw, "webhook %d (%s) of company %d: %s, events %s, %s\n", h.ID, h.Name, h.CompanyID, h.URL,
			strings.Join(h.Events, ","), onOff(h.Active, h.ManagedBy))
		if v.Secret != "" {
			fmt.Fprintf(tw, "secret (shown once, store it now): %s\n", v.Secret)
		}
		for _, warn := range v.Warnings {
			fmt.Fprintf(tw, "warning: %s\n", warn)
		}
	case "delete":
		fmt.Fprintln(tw, "deleted; its delivery history and audit trail are kept")
	case "test":
		var v struct {
			DeliveryID      string   `json:"delivery_id"`
			OK              bool     `json:"ok"`
			StatusCode      *int     `json:"status_code"`
			DurationMS      float64  `json:"duration_ms"`
			Error           string   `json:"error"`
			ResponseSnippet string   `json:"response_snippet"`
			Warnings        []string `json:"warnings"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			return err
		}
		code := "-"
		if v.StatusCode != nil {
			code = fmt.Sprint(*v.StatusCode)
		}
		result := "OK"
		if !v.OK {
			result = "FAILED: " + v.Error
		}
		fmt.Fprintf(tw, "%s\tstatus %s\t%.1f ms\tdelivery %s\n", result, code, v.DurationMS, v.DeliveryID)
		if v.ResponseSnippet != "" {
			fmt.Fprintf(tw, "response: %s\n", v.ResponseSnippet)
		}
	case "deliveries":
		var v struct {
			Deliveries []struct {
				ID        string    `json:"id"`
				EventType string    `json:"event_type"`
				Status    string    `json:"status"`
				CreatedAt time.Time `json:"created_at"`
				Attempts  []struct {
					Attempt    int       `json:"attempt"`
					StartedAt  time.Time `json:"started_at"`
					DurationMS float64   `json:"duration_ms"`
					StatusCode *int      `json:"status_code"`
					Error      string    `json:"error"`
				} `json:"attempts"`
			}
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			return err
		}
		fmt.Fprintln(tw, "DELIVERY\tEVENT\tSTATUS\tCREATED\tATTEMPT\tAT\tMS\tCODE\tERROR")
		for _, d := range v.Deliveries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\t\t\t\n", d.ID, d.EventType, d.Status, d.CreatedAt.Format(time.RFC3339))
			for _, at := range d.Attempts {
				code := "-"
				if at.StatusCode != nil {
					code = fmt.Sprint(*at.StatusCode)
				}
				fmt.Fprintf(tw, "\t\t\t\t%d\t%s\t%.0f\t%s\t%s\n", at.Attempt, at.StartedAt.Format(time.RFC3339), at.DurationMS, code, at.Error)
			}
		}
		if v.NextCursor != nil {
			fmt.Fprintf(tw, "more: --cursor %s\n", *v.NextCursor)
		}
	case "refire":
		var v struct {
			Delivery *struct {
				ID string `json:"id"`
			} `json:"delivery"`
			Refired  *int     `json:"refired"`
			Warnings []string `json:"warnings"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			return err
		}
		if v.Delivery != nil {
			fmt.Fprintf(tw, "re-fired delivery %s (same X-SMTM-Delivery id)\n", v.Delivery.ID)
		}
		if v.Refired != nil {
			fmt.Fprintf(tw, "re-fired %d failed deliveries\n", *v.Refired)
		}
		for _, warn := range v.Warnings {
			fmt.Fprintf(tw, "warning: %s\n", warn)
		}
	}
	return nil
}

func when(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func rate(r *float64, n int) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%% of %d", *r*100, n)
}

func onOff(active bool, managedBy string) string {
	s := "off"
	if active {
		s = "on"
	}
	if managedBy == "file" {
		s += " (config file)"
	}
	return s
}

// cmdEventsAPI is `relay events --url ... --token ...`.
func cmdEventsAPI(ctx context.Context, a apiFlags, stdout io.Writer) error {
	out, err := a.client().Do(ctx, "GET", "/v1/events", nil)
	if err != nil {
		return err
	}
	if a.json {
		fmt.Fprintln(stdout, strings.TrimSpace(string(out)))
		return nil
	}
	var v struct{ Events []string }
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	for _, e := range v.Events {
		fmt.Fprintln(stdout, e)
	}
	return nil
}

// cmdToken prints a new admin token and the hash to configure.
func cmdToken(stdout io.Writer) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	tok := "rat_" + base64.RawURLEncoding.EncodeToString(b)
	fmt.Fprintf(stdout, "token:        %s\ntoken_sha256: %s\n", tok, admin.TokenHash(tok))
	fmt.Fprintln(stdout, "Give the token to its holder; put only token_sha256 in admin.tokens.")
	return nil
}

// shortList shows up to three event types and how many more there are
// (--json has them all).
func shortList(events []string) string {
	if len(events) <= 3 {
		return strings.Join(events, ",")
	}
	return fmt.Sprintf("%s,+%d more", strings.Join(events[:3], ","), len(events)-3)
}
