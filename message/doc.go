// Package message renders an event's payload as a chat message: a Slack
// incoming-webhook message (text and blocks) or a Microsoft Teams message
// carrying an Adaptive Card. It is what a webhook's payload format
// ("slack", "teams") sends instead of the payload itself ("raw").
//
// Each event type has a one-line summary and an optional link path, both Go
// text/template templates over the payload (.event, .timestamp,
// .company_id, .company_name, .data.<field>), with defaults for the 11
// events of the admin guide that an installation can override, and a list
// of the data fields shown beside the summary. Templates are parsed once, by
// New; rendering decodes the payload and executes them.
//
// Render never fails to produce a message: a template that fails on a
// payload (a field it reads is absent, a value of another type) is replaced
// by the event's plain summary, and the failure is returned beside the
// body so that the caller can report it. Every string is JSON-escaped, and
// for Slack also escaped as mrkdwn (&, <, >), so that a value can neither
// break the JSON nor make a link or a mention.
package message
