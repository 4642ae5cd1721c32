package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/smartmaintenance/relay/admin"
)

// The replay commands: deliver a time range's stored events again to one
// webhook, list its replays with their progress, cancel one.

func webhooksReplay(api *apiFlags) *cobra.Command {
	var since, from, to string
	c := &cobra.Command{
		Use:   "replay ID (--since DURATION | --from T [--to T])",
		Short: "Deliver a time range's events again to a webhook (a new or repaired receiver)",
		Long: `Replay: every stored event of the webhook's company in the range, of a type
the webhook subscribes to, is delivered to it again, under its original
X-SMTM-Delivery id and with the X-SMTM-Replay header, at most replay.rate
events a second, beside its live deliveries. Only events the relay stored
(some webhook took them) and still keeps (retention) can be replayed. The
answer says how many events the range holds; "relay webhooks replays ID"
shows the progress, "relay webhooks replay-cancel ID REPLAY" stops it.`,
		Example: `  relay webhooks replay 7 --since 168h        # the last 7 days
  relay webhooks replay 7 --from 2026-04-20T00:00:00Z --to 2026-04-24T00:00:00Z
  relay webhooks replay 7 --from 48h           # from two days ago until now`,
		Args: oneID,
	}
	c.Flags().StringVar(&since, "since", "", "replay the events of this long before now (168h)")
	c.Flags().StringVar(&from, "from", "", "replay the events committed at or after (RFC 3339, or a duration before now)")
	c.Flags().StringVar(&to, "to", "", "... and before (default: now)")
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		body := map[string]string{}
		switch {
		case since != "" && (from != "" || to != ""):
			return nil, usageError{errors.New("give --since, or --from (and --to), not both")}
		case since != "":
			body["since"] = since
		case from != "":
			f, err := parseWhen("from", from)
			if err != nil {
				return nil, err
			}
			body["from"] = f.UTC().Format(time.RFC3339Nano)
			if to != "" {
				t, err := parseWhen("to", to)
				if err != nil {
					return nil, err
				}
				body["to"] = t.UTC().Format(time.RFC3339Nano)
			}
		default:
			return nil, usageError{errors.New("--since DURATION, or --from (and --to), is required")}
		}
		return cl.Do(ctx, "POST", "/v1/webhooks/"+url.PathEscape(args[0])+"/replays", body)
	}, printReplay)
}

func webhooksReplays(api *apiFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "replays ID",
		Short: "List a webhook's replays with their progress",
		Example: `  relay webhooks replays 7
  relay webhooks replays 7 --json | jq '.replays[0].progress'`,
		Args: oneID,
	}
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		return cl.Do(ctx, "GET", "/v1/webhooks/"+url.PathEscape(args[0])+"/replays", nil)
	}, printReplays)
}

func webhooksReplayCancel(api *apiFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "replay-cancel ID REPLAY",
		Short: "Cancel a webhook's running replay",
		Long: `Cancel a replay: nothing more is sent for it, and its deliveries not sent yet
are taken back: one the replay re-armed gets back the status it had before (a
delivered event stays delivered), one it created is removed; only one whose
replay attempt failed and waited for a retry ends as failed, naming the
cancel. An attempt already in flight finishes.`,
		Example: `  relay webhooks replay-cancel 7 3`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{fmt.Errorf("want a webhook id and a replay id, got %d arguments (see %s --help)", len(args), c.CommandPath())}
			}
			return nil
		},
	}
	return apiCommand(c, api, func(ctx context.Context, cl *admin.Client, args []string) (json.RawMessage, error) {
		return cl.Do(ctx, "POST", "/v1/webhooks/"+url.PathEscape(args[0])+"/replays/"+url.PathEscape(args[1])+"/cancel", nil)
	}, printReplay)
}

type replayJSON struct {
	ID        int64     `json:"id"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	State     string    `json:"state"`
	Events    int64     `json:"events"`
	Armed     int64     `json:"armed"`
	Skipped   int64     `json:"skipped"`
	Withdrawn int64     `json:"withdrawn"`
	Progress  float64   `json:"progress"`
	Pending   int64     `json:"pending"`
	Delivered int64     `json:"delivered"`
	Failed    int64     `json:"failed"`
	Error     string    `json:"error"`
}

func printReplay(w io.Writer, out json.RawMessage) error {
	var v struct {
		Replay   replayJSON `json:"replay"`
		Warnings []string   `json:"warnings"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	r := v.Replay
	fmt.Fprintf(w, "replay %d: %s, %d events from %s to %s\n", r.ID, safe(r.State), r.Events,
		r.From.Local().Format(time.RFC3339), r.To.Local().Format(time.RFC3339))
	if r.Armed+r.Pending+r.Delivered+r.Failed > 0 {
		fmt.Fprintf(w, "sent again %d, skipped %d; now pending %d, delivered %d, failed %d\n",
			r.Armed, r.Skipped, r.Pending, r.Delivered, r.Failed)
	}
	if r.Withdrawn > 0 {
		fmt.Fprintf(w, "taken back unsent by the cancel: %d\n", r.Withdrawn)
	}
	for _, warn := range v.Warnings {
		fmt.Fprintf(w, "warning: %s\n", safe(warn))
	}
	return nil
}

func printReplays(w io.Writer, out json.RawMessage) error {
	var v struct {
		Replays []replayJSON `json:"replays"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return err
	}
	if len(v.Replays) == 0 {
		fmt.Fprintln(w, "no replays")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tFROM\tTO\tEVENTS\tDONE\tPENDING\tDELIVERED\tFAILED")
	for _, r := range v.Replays {
		state := safe(r.State)
		if r.Error != "" {
			state += " (" + safe(r.Error) + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%.0f%%\t%d\t%d\t%d\n", r.ID, state,
			r.From.Local().Format("2006-01-02 15:04"), r.To.Local().Format("2006-01-02 15:04"),
			r.Events, r.Progress*100, r.Pending, r.Delivered, r.Failed)
	}
	return tw.Flush()
}
