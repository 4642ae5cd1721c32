package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/smartmaintenance/relay/admin"
)

// The commands that look at one webhook: show (all of its settings) and
// audit (who changed what, also after it was deleted).

func webhooksShow(api *apiFlags) *cobra.Command {
	c := &cobra.Command{
		Use:     "show ID",
		Aliases: []string{"get"},
		Short:   "Show one webhook whole: its URL, events, format, filter, headers, signing and stats",
		Long: `Show one webhook with every setting: URL, events, format, filter, header
names (the API never shows their values), description, Standard Webhooks, the
end of a secret rotation's overlap window, when it last fired and its 24-hour
success rate.`,
		Example: `  relay webhooks show 7
  relay webhooks get 7 --json | jq -r .webhook.filter`,
		Args: oneID,
	}
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		return cl.Do(ctx, "GET", "/v1/webhooks/"+url.PathEscape(args[0]), nil)
	}, printShow)
}

func printShow(w io.Writer, out json.RawMessage) error {
	var v struct {
		Webhook  webhookJSON
		Warnings []string
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	h := v.Webhook
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	row("webhook", fmt.Sprintf("%d (%s) of company %d", h.ID, safe(h.Name), h.CompanyID))
	row("url", safe(h.URL))
	row("events", safe(strings.Join(h.Events, ", ")))
	row("active", onOff(h.Active, h.ManagedBy))
	row("format", safe(or(h.Format, "raw")))
	row("filter", safe(or(h.Filter, "none: every event of its types")))
	headers := "none"
	if len(h.Headers) > 0 {
		headers = safe(strings.Join(slices.Sorted(maps.Keys(h.Headers)), ", ")) + " (values not shown)"
	}
	row("headers", headers)
	row("description", safe(or(h.Description, "-")))
	row("standard webhooks", map[bool]string{true: "on (webhook-id, webhook-timestamp, webhook-signature)", false: "off"}[h.StandardWebhooks])
	secret := "set"
	if !h.HasSecret {
		secret = "none"
	}
	if t := h.PreviousSecretValidUntil; t != nil {
		secret += "; the previous one still signs too until " + when(t) + " (X-SMTM-Signature-Previous)"
	}
	row("secret", secret)
	row("last fired", when(h.LastFiredAt))
	row("success 24h", rate(h.SuccessRate24h, h.Attempts24h))
	if !h.CreatedAt.IsZero() {
		row("created", when(&h.CreatedAt))
		row("updated", when(&h.UpdatedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printWarnings(w, v.Warnings, false) // its URL is not news: no HTTPS warning
	return nil
}

func or(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func webhooksAudit(api *apiFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit ID",
		Short: "Show a webhook's audit trail, newest first; also after it was deleted",
		Long: `Show who (the token's name) did what to a webhook and when, newest first, up
to 200 entries: creates, changes (which settings), secret rotations, enables,
disables, the delete, test events, re-fires and replays. A deleted webhook's
trail stays readable, to its company. Secrets are never in it and header
values are masked; --json has each entry's settings before and after.`,
		Example: `  relay webhooks audit 7
  relay webhooks audit 7 --json | jq '.audit[] | select(.action == "webhook.delete")'`,
		Args: oneID,
	}
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		return cl.Do(ctx, "GET", "/v1/webhooks/"+url.PathEscape(args[0])+"/audit", nil)
	}, printAudit)
}

func printAudit(w io.Writer, out json.RawMessage) error {
	var v struct {
		Audit []struct {
			At         time.Time      `json:"at"`
			Actor      string         `json:"actor"`
			Action     string         `json:"action"`
			DeliveryID string         `json:"delivery_id"`
			Before     map[string]any `json:"before"`
			After      map[string]any `json:"after"`
			Details    map[string]any `json:"details"`
		} `json:"audit"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tACTOR\tACTION\tDETAILS")
	for _, e := range v.Audit {
		var details []string
		if e.DeliveryID != "" {
			details = append(details, "delivery "+e.DeliveryID)
		}
		if e.Before != nil && e.After != nil {
			var changed []string
			for _, k := range slices.Sorted(maps.Keys(e.After)) {
				if !reflect.DeepEqual(e.Before[k], e.After[k]) {
					changed = append(changed, k)
				}
			}
			if len(changed) > 0 {
				details = append(details, "changed "+strings.Join(changed, ", "))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(e.Details)) {
			details = append(details, fmt.Sprintf("%s %v", k, e.Details[k]))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", when(&e.At), safe(e.Actor), safe(e.Action), safe(strings.Join(details, "; ")))
	}
	return tw.Flush()
}
