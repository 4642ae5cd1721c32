package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/internal/termtext"
)

// Everything printed below that an admin API answer carries (names, URLs,
// event types, errors, receivers' bodies) was chosen by a tenant or a
// receiver: it goes through termtext.Safe, so that it cannot move the
// cursor, recolour the terminal or forge a row of a table.
var safe = termtext.Safe

// apiFlags are the flags every admin API command takes.
type apiFlags struct {
	url, token string
	json       bool
}

// register adds --url, --token and --json. Their defaults from the
// environment are read when the command runs (resolve), so that help never
// prints a token.
func (a *apiFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&a.url, "url", "", "admin API base URL (default $RELAY_ADMIN_URL)")
	fs.StringVar(&a.token, "token", "", "admin API token (default $RELAY_ADMIN_TOKEN)")
	fs.BoolVar(&a.json, "json", false, "print the API's JSON answer")
}

// resolve fills the URL and token from the environment where the flags
// left them empty.
func (a *apiFlags) resolve() *apiFlags {
	if a.url == "" {
		a.url = os.Getenv("RELAY_ADMIN_URL")
	}
	if a.token == "" {
		a.token = os.Getenv("RELAY_ADMIN_TOKEN")
	}
	return a
}

func (a *apiFlags) client() (*admin.Client, error) {
	a.resolve()
	if a.url == "" || a.token == "" {
		return nil, usageError{errors.New("the admin API needs --url and --token (or RELAY_ADMIN_URL and RELAY_ADMIN_TOKEN)")}
	}
	return &admin.Client{URL: a.url, Token: a.token}, nil
}

// headerList collects repeated --header "Name: value" flags.
type headerList map[string]string

func (h headerList) String() string { return "" }
func (h headerList) Type() string   { return "header" }
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

// parseWhen reads an RFC 3339 time, a duration before now, or "now".
func parseWhen(flagName, s string) (time.Time, error) {
	if strings.EqualFold(s, "now") {
		return time.Now(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, usageError{fmt.Errorf("--%s %q: want an RFC 3339 time (2026-04-24T09:15:30Z), a duration before now (24h) or now", flagName, s)}
}

// oneID is the Args of the commands that act on one webhook.
func oneID(c *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usageError{fmt.Errorf("want one webhook id, got %d arguments (see %s --help)", len(args), c.CommandPath())}
	}
	return checkID("webhook", args[0])
}

// checkID refuses an id that is not a number as a usage error, before the
// API is asked (which would answer "no such webhook").
func checkID(what, s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return usageError{fmt.Errorf("invalid %s id %q: want a number", what, s)}
	case n < 1:
		return usageError{fmt.Errorf("invalid %s id %q: want a number from 1 up", what, s)}
	}
	return nil
}

// replayIDs checks the replay id of replay-cancel beside its webhook id.
func replayIDs(c *cobra.Command) *cobra.Command {
	args := c.Args
	c.Args = func(c *cobra.Command, a []string) error {
		if err := args(c, a); err != nil {
			return err
		}
		if err := checkID("webhook", a[0]); err != nil {
			return err
		}
		return checkID("replay", a[1])
	}
	return c
}

// flagOfField names the flag of each admin API field whose flag is named
// otherwise, so that an answer such as "company_id: required with an
// operator token" says "--company: ...".
var flagOfField = map[string]string{
	"company_id":        "--company",
	"url":               "--endpoint",
	"headers":           "--header",
	"secret_overlap":    "--secret-overlap",
	"rotate_secret":     "--rotate-secret",
	"standard_webhooks": "--standard-webhooks",
	"event_type":        "--event",
}

// withFlagNames names, before the field an API error begins with ("url:
// ...", "headers[X-Key]: ..."), the flag that sets it: "--endpoint (url):
// ...".
func withFlagNames(err error) error {
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Field == "" || !strings.HasPrefix(ae.Message, ae.Field+": ") {
		return err
	}
	field, sub, _ := strings.Cut(strings.TrimSuffix(ae.Field, "]"), "[")
	flag, ok := flagOfField[field]
	if !ok {
		return err
	}
	if sub != "" {
		if !strings.HasPrefix(sub, `"`) {
			sub = strconv.Quote(sub)
		}
		flag += " " + sub
	}
	mapped := *ae
	mapped.Message = flag + " (" + ae.Field + "): " + strings.TrimPrefix(ae.Message, ae.Field+": ")
	return &mapped
}

// apiCall is what a webhooks subcommand does: one request to the admin
// API, whose answer print shows to a human (--json prints it as it is).
type apiCall func(ctx context.Context, c *admin.Client, args []string) (json.RawMessage, error)

// apiCommand makes a webhooks subcommand from its request and its printer.
func apiCommand(c *cobra.Command, api *apiFlags, call apiCall, print func(io.Writer, json.RawMessage) error) *cobra.Command {
	c.RunE = func(c *cobra.Command, args []string) error {
		client, err := api.client()
		if err != nil {
			return err
		}
		out, err := call(c.Context(), client, args)
		if err != nil {
			return withFlagNames(err)
		}
		if api.json {
			fmt.Fprintln(c.OutOrStdout(), jsonText(out))
		} else if err := print(c.OutOrStdout(), out); err != nil {
			return err
		}
		return testOutcome(c, out)
	}
	return c
}

// jsonText is an answer as --json prints it: indented, and with the
// characters termtext.Safe escapes written as JSON escapes. JSON itself
// escapes only C0 controls, so a receiver's body could otherwise put a C1
// control (U+009B, a terminal sequence) or a bidirectional override raw on
// the terminal; escaped, it is still JSON of the same values.
func jsonText(out json.RawMessage) string {
	var buf bytes.Buffer
	if json.Indent(&buf, out, "", "  ") != nil {
		buf.Write(out) // not JSON: shown as it came, escaped all the same
	}
	return string(termtext.JSON(bytes.TrimSpace(buf.Bytes())))
}

// testOutcome turns a failed test event into exit code 4; other answers
// pass.
func testOutcome(c *cobra.Command, out json.RawMessage) error {
	if c.Name() != "test" {
		return nil
	}
	var v testResult
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	if v.OK {
		return nil
	}
	reason := v.Error
	if reason == "" && v.StatusCode != nil {
		reason = fmt.Sprintf("HTTP %d", *v.StatusCode)
	}
	return testFailedError{fmt.Errorf("the test event failed: %s", reason)}
}

const apiHelp = `
The admin API is reached with --url and --token, or RELAY_ADMIN_URL and
RELAY_ADMIN_TOKEN. Times are RFC 3339 (2026-04-24T09:15:30Z), a duration
before now (24h) or now. An answer the API refuses exits 1 with its message;
missing --url or --token, or an id that is not a number, exits 2.`

func webhooksCmd() *cobra.Command {
	api := &apiFlags{}
	c := &cobra.Command{
		Use:   "webhooks",
		Short: "Manage webhooks over the admin API (the Webhooks page)",
		Long:  "List, show, create, update, enable, disable, delete and test webhooks, look at\ntheir deliveries and audit trail, re-fire them and replay a time range, over a\nrunning relay's admin API.\n" + apiHelp,
		Example: `  export RELAY_ADMIN_URL=http://127.0.0.1:8081 RELAY_ADMIN_TOKEN=rat_...
  relay webhooks list
  relay webhooks show 1
  relay webhooks create --name "SAP-PM bridge" --endpoint https://sap.example.com/in --events task.completed
  relay webhooks test 1 --event task.completed`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	api.register(c.PersistentFlags())
	c.AddCommand(webhooksList(api), webhooksShow(api), webhooksCreate(api), webhooksUpdate(api),
		webhooksToggle(api, "enable"), webhooksToggle(api, "disable"), webhooksDelete(api),
		webhooksTest(api), webhooksDeliveries(api), webhooksRefire(api), webhooksAudit(api),
		webhooksReplay(api), webhooksReplays(api), replayIDs(webhooksReplayCancel(api)))
	return c
}

func webhooksList(api *apiFlags) *cobra.Command {
	var company int64
	c := &cobra.Command{
		Use:   "list [--company ID]",
		Short: "List webhooks with when they last fired and their 24-hour success rate",
		Example: `  relay webhooks list
  relay webhooks list --company 2        # an operator token sees every company; this filters
  relay webhooks list --json | jq '.webhooks[] | select(.success_rate_24h < 0.9)'`,
		Args: noArgs,
	}
	c.Flags().Int64Var(&company, "company", 0, "company id (operator tokens)")
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, _ []string) (json.RawMessage, error) {
		p := "/v1/webhooks"
		if company > 0 {
			p += fmt.Sprintf("?company_id=%d", company)
		}
		return cl.Do(ctx, "GET", p, nil)
	}, printList)
}

// webhookFields are the flags create and update share.
type webhookFields struct {
	name, endpoint, events, secret, description string
	format                                      string
	filter                                      string
	headers                                     headerList
	standard                                    bool
}

func (f *webhookFields) register(fs *pflag.FlagSet, create bool) {
	f.headers = headerList{}
	fs.StringVar(&f.name, "name", "", "name")
	fs.StringVar(&f.endpoint, "endpoint", "", "the webhook's URL (--url is the admin API's)")
	fs.StringVar(&f.events, "events", "", "event types, comma-separated (relay events lists them)")
	if create {
		fs.StringVar(&f.secret, "secret", "", "signing secret, at least 16 bytes (omit to have one generated)")
	} else {
		fs.StringVar(&f.secret, "secret", "", "signing secret, at least 16 bytes")
	}
	fs.Var(f.headers, "header", `extra header "Name: value" (repeatable; update: replaces all headers)`)
	fs.StringVar(&f.description, "description", "", "description")
	fs.StringVar(&f.format, "format", "", "request body: "+strings.Join(admin.Formats(), ", ")+" (create: raw unless given)")
	fs.BoolVar(&f.standard, "standard-webhooks", false,
		"also send the Standard Webhooks headers webhook-id, webhook-timestamp, webhook-signature (--standard-webhooks=false: off)")
	fs.StringVar(&f.filter, "filter", "", `send only the events for which this condition is true, e.g. 'data.priority == "critical"' (update: "" removes it)`)
}

// body is the JSON of the flags given.
func (f *webhookFields) body(fs *pflag.FlagSet) map[string]any {
	body := map[string]any{}
	if fs.Changed("name") {
		body["name"] = f.name
	}
	if fs.Changed("endpoint") {
		body["url"] = f.endpoint
	}
	if fs.Changed("events") {
		body["events"] = splitList(f.events)
	}
	if fs.Changed("secret") {
		body["secret"] = f.secret
	}
	if fs.Changed("header") {
		body["headers"] = map[string]string(f.headers)
	}
	if fs.Changed("description") {
		body["description"] = f.description
	}
	if fs.Changed("format") {
		body["format"] = f.format
	}
	if fs.Changed("standard-webhooks") {
		body["standard_webhooks"] = f.standard
	}
	if fs.Changed("filter") {
		body["filter"] = f.filter
	}
	return body
}

func webhooksCreate(api *apiFlags) *cobra.Command {
	var f webhookFields
	var inactive bool
	var company int64
	c := &cobra.Command{
		Use:   "create --name NAME --endpoint URL --events a,b [flags]",
		Short: "Register a webhook; active at once unless --inactive",
		Long: `Register a webhook. Without --secret the relay generates one and prints it
once. A company admin's token creates it in its own company; an operator
token needs --company.`,
		Example: `  relay webhooks create --name "SAP-PM bridge" --endpoint https://sap.example.com/in --events task.completed
  relay webhooks create --name Slack --endpoint https://hooks.slack.com/services/T0/B0/x \
      --events repair_request.created,shutdown.reported --format slack
  relay webhooks create --name Shutdowns --endpoint https://hooks.example.com/x \
      --events shutdown.reported,shutdown.resolved --header "Authorization: Bearer xyz"
  relay webhooks create --company 2 --name "Nordwerk ERP" --endpoint https://erp.example.com/in --events task.completed --inactive`,
		Args: noArgs,
	}
	f.register(c.Flags(), true)
	c.Flags().BoolVar(&inactive, "inactive", false, "create it disabled")
	c.Flags().Int64Var(&company, "company", 0, "company id (required with an operator token)")
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, _ []string) (json.RawMessage, error) {
		body := f.body(c.Flags())
		if inactive {
			body["active"] = false
		}
		if company > 0 {
			body["company_id"] = company
		}
		return cl.Do(ctx, "POST", "/v1/webhooks", body)
	}, printWebhook)
}

func webhooksUpdate(api *apiFlags) *cobra.Command {
	var f webhookFields
	var rotate bool
	var overlap string
	c := &cobra.Command{
		Use:   "update ID [flags]",
		Short: "Change a webhook; only the flags given change",
		Example: `  relay webhooks update 7 --events task.completed,task.approved
  relay webhooks update 7 --rotate-secret          # prints the new secret once; the old one signs too for 24h
  relay webhooks update 7 --rotate-secret --secret-overlap 72h
  relay webhooks update 7 --format teams           # send Microsoft Teams messages
  relay webhooks update 7 --standard-webhooks
  relay webhooks update 7 --header "Authorization: Bearer new-token"   # prints the names of the headers it drops`,
		Args: oneID,
	}
	f.register(c.Flags(), false)
	c.Flags().BoolVar(&rotate, "rotate-secret", false, "replace the secret with a generated one")
	c.Flags().StringVar(&overlap, "secret-overlap", "",
		`with --rotate-secret or --secret: how long the replaced secret keeps signing too, e.g. "24h" (default), "0" for none, at most 168h`)
	var removed []string // header names --header drops
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		body := f.body(c.Flags())
		if rotate {
			body["rotate_secret"] = true
		}
		if c.Flags().Changed("secret-overlap") {
			body["secret_overlap"] = overlap
		}
		p := "/v1/webhooks/" + url.PathEscape(args[0])
		removed = nil
		if c.Flags().Changed("header") {
			// --header replaces all headers: read the names there are now
			// (the API shows no values) to say which ones go.
			old, err := getWebhook(ctx, cl, args[0])
			if err != nil {
				return nil, err
			}
			removed = droppedHeaders(old.Headers, f.headers)
		}
		return cl.Do(ctx, "PATCH", p, body)
	}, func(w io.Writer, out json.RawMessage) error {
		if err := printSaved(w, out, c.Flags().Changed("endpoint")); err != nil {
			return err
		}
		if len(removed) > 0 {
			names := make([]string, len(removed))
			for i, n := range removed {
				names[i] = safe(n)
			}
			fmt.Fprintf(w, "headers removed: %s\n", strings.Join(names, ", "))
		}
		return nil
	})
}

// getWebhook reads one webhook (GET /v1/webhooks/{id}).
func getWebhook(ctx context.Context, cl *admin.Client, id string) (webhookJSON, error) {
	out, err := cl.Do(ctx, "GET", "/v1/webhooks/"+url.PathEscape(id), nil)
	if err != nil {
		return webhookJSON{}, err
	}
	var v struct{ Webhook webhookJSON }
	if err := json.Unmarshal(out, &v); err != nil {
		return webhookJSON{}, fmt.Errorf("admin API: webhook %s: %w", id, err)
	}
	return v.Webhook, nil
}

// droppedHeaders are the names of old that kept does not set again (header
// names are case-insensitive), sorted.
func droppedHeaders(old map[string]string, kept headerList) []string {
	names := slices.Collect(maps.Keys(kept))
	var out []string
	for name := range old {
		if !slices.ContainsFunc(names, func(k string) bool { return strings.EqualFold(k, name) }) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func webhooksToggle(api *apiFlags, verb string) *cobra.Command {
	short := map[string]string{"enable": "Turn a webhook on", "disable": "Turn a webhook off; nothing is sent to it until it is enabled"}[verb]
	c := &cobra.Command{
		Use:     verb + " ID",
		Short:   short,
		Example: "  relay webhooks " + verb + " 7",
		Args:    oneID,
	}
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		return cl.Do(ctx, "POST", "/v1/webhooks/"+url.PathEscape(args[0])+"/"+verb, nil)
	}, func(w io.Writer, out json.RawMessage) error {
		return printSaved(w, out, false) // the URL is as it was: no HTTPS warning again
	})
}

func webhooksDelete(api *apiFlags) *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "delete ID [--yes]",
		Short: "Delete a webhook; its pending deliveries are not sent, its audit trail is kept",
		Long: `Delete a webhook. Nothing more is sent to it: its pending deliveries end as
failed. Its deliveries can no longer be listed; its audit trail is kept
("relay webhooks audit ID" shows it).

On a terminal the command asks to type the webhook's name, as the Webhooks
page does; --yes deletes without asking. Without a terminal on standard
input (a script, cron, CI) it does not ask.`,
		Example: `  relay webhooks delete 7          # asks for the webhook's name
  relay webhooks delete 7 --yes    # no question`,
		Args: oneID,
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking to type the webhook's name")
	var id int64
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		id, _ = strconv.ParseInt(args[0], 10, 64) // oneID checked it
		if !yes {
			if err := confirmDelete(ctx, c, cl, args[0]); err != nil {
				return nil, err
			}
		}
		if _, err := cl.Do(ctx, "DELETE", "/v1/webhooks/"+url.PathEscape(args[0]), nil); err != nil {
			return nil, err
		}
		return json.RawMessage(fmt.Sprintf(`{"deleted": true, "id": %d}`, id)), nil
	}, func(w io.Writer, _ json.RawMessage) error {
		_, err := fmt.Fprintf(w, "deleted webhook %d: its pending deliveries will not be sent and its deliveries are no longer listed; "+
			"its audit trail is kept (relay webhooks audit %d)\n", id, id)
		return err
	})
}

func webhooksTest(api *apiFlags) *cobra.Command {
	var event string
	c := &cobra.Command{
		Use:   "test ID --event TYPE",
		Short: "Send a signed test event and show the receiver's answer",
		Long: `Send a test event ("test": true, signed like a real one) to the webhook now
and print the receiver's status, latency and first bytes. Exit 4 when the
receiver does not answer 2xx in time, so that scripts can tell.`,
		Example: `  relay webhooks test 7 --event task.completed
  relay webhooks test 7 --event shutdown.reported --json`,
		Args: oneID,
	}
	c.Flags().StringVar(&event, "event", "", "event type (relay events lists them)")
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		if event == "" {
			return nil, usageError{errors.New("--event TYPE is required (relay events lists them)")}
		}
		return cl.Do(ctx, "POST", "/v1/webhooks/"+url.PathEscape(args[0])+"/test", map[string]string{"event_type": event})
	}, printTest)
}

func webhooksDeliveries(api *apiFlags) *cobra.Command {
	var status, from, to, cursor string
	var limit int
	c := &cobra.Command{
		Use:   "deliveries ID [--status S] [--from T] [--to T] [--limit N] [--cursor C]",
		Short: "List a webhook's deliveries, newest first, with every attempt",
		Example: `  relay webhooks deliveries 7
  relay webhooks deliveries 7 --status failed --from 24h
  relay webhooks deliveries 7 --from 2026-04-24T00:00:00Z --to 2026-04-25T00:00:00Z --limit 50`,
		Args: oneID,
	}
	c.Flags().StringVar(&status, "status", "", "pending, retrying, delivered, failed (comma-separated)")
	c.Flags().StringVar(&from, "from", "", "created at or after")
	c.Flags().StringVar(&to, "to", "", "created before")
	c.Flags().IntVar(&limit, "limit", 0, "page size (1 to 200)")
	c.Flags().StringVar(&cursor, "cursor", "", "next_cursor of the previous page")
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		q := url.Values{}
		if status != "" {
			q.Set("status", status)
		}
		for _, v := range []struct{ name, value string }{{"from", from}, {"to", to}} {
			if v.value != "" {
				t, err := parseWhen(v.name, v.value)
				if err != nil {
					return nil, err
				}
				q.Set(v.name, t.UTC().Format(time.RFC3339Nano))
			}
		}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		p := "/v1/webhooks/" + url.PathEscape(args[0]) + "/deliveries"
		if len(q) > 0 {
			p += "?" + q.Encode()
		}
		return cl.Do(ctx, "GET", p, nil)
	}, printDeliveries)
}

func webhooksRefire(api *apiFlags) *cobra.Command {
	var delivery, from, to string
	c := &cobra.Command{
		Use:   "refire ID (--delivery UUID | --from T [--to T])",
		Short: "Send a failed delivery again, or every failed one of a time range",
		Long: `Re-fire one delivery, or the failed deliveries created in a time range. A
re-fired delivery keeps its X-SMTM-Delivery id, so receivers that
deduplicate on it are safe.`,
		Example: `  relay webhooks refire 7 --delivery 3f0c2a9e-7d1b-4c55-9a8e-1f2b3c4d5e6f
  relay webhooks refire 7 --from 24h                  # the last 24 hours, until now
  relay webhooks refire 7 --from 2026-04-24T00:00:00Z --to 2026-04-25T00:00:00Z`,
		Args: oneID,
	}
	c.Flags().StringVar(&delivery, "delivery", "", "delivery id (X-SMTM-Delivery)")
	c.Flags().StringVar(&from, "from", "", "re-fire failed deliveries created at or after")
	c.Flags().StringVar(&to, "to", "now", "... and before")
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		id := url.PathEscape(args[0])
		toGiven := c.Flags().Changed("to")
		switch {
		case delivery != "" && (from != "" || toGiven):
			return nil, usageError{errors.New("give --delivery, or --from (and --to), not both")}
		case delivery != "":
			return cl.Do(ctx, "POST", "/v1/webhooks/"+id+"/deliveries/"+url.PathEscape(delivery)+"/refire", nil)
		case from != "":
			f, err := parseWhen("from", from)
			if err != nil {
				return nil, err
			}
			t, err := parseWhen("to", to)
			if err != nil {
				return nil, err
			}
			return cl.Do(ctx, "POST", "/v1/webhooks/"+id+"/refire", map[string]string{
				"from": f.UTC().Format(time.RFC3339Nano), "to": t.UTC().Format(time.RFC3339Nano)})
		case toGiven:
			return nil, usageError{errors.New("--to needs --from: re-fire the failed deliveries created from --from until --to (now by default)")}
		default:
			return nil, usageError{errors.New("--delivery UUID, or --from (and --to), is required")}
		}
	}, printRefire)
}

type webhookJSON struct {
	ID             int64             `json:"id"`
	CompanyID      int64             `json:"company_id"`
	Name           string            `json:"name"`
	URL            string            `json:"url"`
	Events         []string          `json:"events"`
	Headers        map[string]string `json:"headers"` // values masked by the API
	Description    string            `json:"description"`
	Format         string            `json:"format"`
	Filter         string            `json:"filter"`
	Active         bool              `json:"active"`
	ManagedBy      string            `json:"managed_by"`
	LastFiredAt    *time.Time        `json:"last_fired_at"`
	SuccessRate24h *float64          `json:"success_rate_24h"`
	Attempts24h    int               `json:"attempts_24h"`
	HasSecret      bool              `json:"has_secret"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
	// StandardWebhooks and PreviousSecretValidUntil: see signing.go.
	StandardWebhooks         bool       `json:"standard_webhooks"`
	PreviousSecretValidUntil *time.Time `json:"previous_secret_valid_until"`
}

func printList(w io.Writer, out json.RawMessage) error {
	var v struct{ Webhooks []webhookJSON }
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCOMPANY\tNAME\tURL\tEVENTS\tLAST FIRED\tSUCCESS 24H\tACTIVE")
	for _, h := range v.Webhooks {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.CompanyID, safe(h.Name), safe(h.URL), safe(shortList(h.Events)),
			when(h.LastFiredAt), rate(h.SuccessRate24h, h.Attempts24h), onOff(h.Active, h.ManagedBy))
	}
	return tw.Flush()
}

// printWebhook prints the answer of a create: the webhook, its generated
// secret and every warning.
func printWebhook(w io.Writer, out json.RawMessage) error { return printSaved(w, out, true) }

// httpsWarning begins the warning of a webhook whose URL is plain HTTP.
const httpsWarning = "url: not HTTPS"

// printSaved prints the answer of a create or a change. The warning that
// the URL is not HTTPS is printed only when urlSet (the command created the
// webhook or changed its URL): enabling it again does not need it again.
func printSaved(w io.Writer, out json.RawMessage, urlSet bool) error {
	var v struct {
		Webhook        webhookJSON
		Secret         string
		StandardSecret string `json:"standard_webhooks_secret"`
		Warnings       []string
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	h := v.Webhook
	format := ""
	if h.Format != "" && h.Format != "raw" {
		format = ", format " + safe(h.Format)
	}
	fmt.Fprintf(w, "webhook %d (%s) of company %d: %s, events %s%s, %s\n", h.ID, safe(h.Name), h.CompanyID, safe(h.URL),
		safe(strings.Join(h.Events, ",")), format, onOff(h.Active, h.ManagedBy))
	if h.Filter != "" {
		fmt.Fprintf(w, "filter: %s\n", safe(h.Filter))
	}
	if v.Secret != "" {
		fmt.Fprintf(w, "secret (shown once, store it now): %s\n", safe(v.Secret))
	}
	printSigning(w, h, v.StandardSecret)
	printWarnings(w, v.Warnings, urlSet)
	return nil
}

// printWarnings prints an answer's warnings; the HTTPS one only with
// urlSet.
func printWarnings(w io.Writer, warnings []string, urlSet bool) {
	for _, warn := range warnings {
		if urlSet || !strings.HasPrefix(warn, httpsWarning) {
			fmt.Fprintf(w, "warning: %s\n", safe(warn))
		}
	}
}

// testResult is the answer to a test event.
type testResult struct {
	DeliveryID      string   `json:"delivery_id"`
	OK              bool     `json:"ok"`
	StatusCode      *int     `json:"status_code"`
	DurationMS      float64  `json:"duration_ms"`
	Error           string   `json:"error"`
	ResponseSnippet string   `json:"response_snippet"`
	Warnings        []string `json:"warnings"`
	FilterPassed    *bool    `json:"filter_passed"`
}

func printTest(w io.Writer, out json.RawMessage) error {
	var v testResult
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	code := "-"
	if v.StatusCode != nil {
		code = fmt.Sprint(*v.StatusCode)
	}
	result := "OK"
	if !v.OK {
		result = "FAILED: " + safe(v.Error)
	}
	fmt.Fprintf(w, "%s  status %s  %.1f ms  delivery %s\n", result, code, v.DurationMS, safe(v.DeliveryID))
	if v.ResponseSnippet != "" {
		fmt.Fprintf(w, "response: %s\n", safe(v.ResponseSnippet))
	}
	if v.FilterPassed != nil && !*v.FilterPassed {
		fmt.Fprintln(w, "note: the webhook's filter would not pass this event; test events are sent regardless")
	}
	for _, warn := range v.Warnings {
		fmt.Fprintf(w, "warning: %s\n", safe(warn))
	}
	return nil
}

func printDeliveries(w io.Writer, out json.RawMessage) error {
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
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DELIVERY\tEVENT\tSTATUS\tCREATED\tATTEMPT\tAT\tMS\tCODE\tERROR")
	for _, d := range v.Deliveries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\t\t\t\n", safe(d.ID), safe(d.EventType), safe(d.Status), d.CreatedAt.Format(time.RFC3339))
		for _, at := range d.Attempts {
			code := "-"
			if at.StatusCode != nil {
				code = fmt.Sprint(*at.StatusCode)
			}
			fmt.Fprintf(tw, "\t\t\t\t%d\t%s\t%.1f\t%s\t%s\n", at.Attempt, at.StartedAt.Format(time.RFC3339), at.DurationMS, code, safe(at.Error))
		}
	}
	if v.NextCursor != nil {
		fmt.Fprintf(tw, "more: --cursor %s\n", safe(*v.NextCursor))
	}
	return tw.Flush()
}

func printRefire(w io.Writer, out json.RawMessage) error {
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
		fmt.Fprintf(w, "re-fired delivery %s (same X-SMTM-Delivery id)\n", safe(v.Delivery.ID))
	}
	if v.Refired != nil {
		fmt.Fprintf(w, "re-fired %d failed deliveries\n", *v.Refired)
	}
	for _, warn := range v.Warnings {
		fmt.Fprintf(w, "warning: %s\n", safe(warn))
	}
	return nil
}

func when(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05 -07:00") // the terminal's zone, named
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
func cmdEventsAPI(c *cobra.Command, api apiFlags) error {
	client, err := api.client()
	if err != nil {
		return err
	}
	out, err := client.Do(c.Context(), "GET", "/v1/events", nil)
	if err != nil {
		return err
	}
	stdout := c.OutOrStdout()
	if api.json {
		fmt.Fprintln(stdout, string(termtext.JSON(bytes.TrimSpace(out))))
		return nil
	}
	var v struct{ Events []string }
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	for _, e := range v.Events {
		fmt.Fprintln(stdout, safe(e))
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
