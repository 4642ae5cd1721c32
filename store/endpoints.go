package store

import (
	"fmt"
	"sync"
	"time"
)

// endpoint is what a claimed delivery needs of its webhook, ready to send:
// the URL, the decrypted secret and the decoded, decrypted headers. Every delivery of
// the webhook shares it, so nothing in it may be changed.
type endpoint struct {
	// The stored forms it was made from.
	url, sealed, headersJSON string
	format                   string
	previousSealed           string
	previousUntil            time.Time
	standard                 bool

	secret, secretErr string
	headers           map[string]string
	previous          string
}

// signing is what a claim reads of a webhook's Standard Webhooks and
// rotation columns: the previous secret as stored (nil or empty for none
// or an ended window), the end of its window, and whether Standard
// Webhooks is on.
type signing struct {
	previous []byte
	until    time.Time
	standard bool
}

// endpoints keeps one endpoint per webhook, so that a batch of deliveries
// to a webhook decrypts its secret and headers once, not once
// per delivery, and shares one copy of its URL. An entry is used only while
// the stored forms are the same: an edited webhook gets a new one. It holds
// at most maxEndpoints and starts over when full.
type endpoints struct {
	mu sync.Mutex
	m  map[int64]*endpoint
}

const maxEndpoints = 4096

// endpointOf returns the endpoint of webhook for its stored URL, secret
// (sealed by s.box, or plain; nil or empty for none), headers (a JSON
// object), payload format and signing settings.
func (s *Store) endpointOf(webhook int64, url, sealed, headers, format []byte, sg signing) *endpoint {
	c := &s.endpoints
	c.mu.Lock()
	e := c.m[webhook]
	c.mu.Unlock()
	if e != nil && e.url == string(url) && e.sealed == string(sealed) && e.headersJSON == string(headers) &&
		e.format == string(format) && e.previousSealed == string(sg.previous) && e.previousUntil.Equal(sg.until) && e.standard == sg.standard {
		return e
	}
	e = &endpoint{url: string(url), sealed: string(sealed), headersJSON: string(headers), format: formatName(format),
		previousSealed: string(sg.previous), previousUntil: sg.until, standard: sg.standard}
	if e.sealed != "" {
		plain, err := s.box.Open(e.sealed)
		if err != nil {
			e.secretErr = fmt.Sprintf("webhook %d: %v; configure the key that encrypted it (secrets.previous_keys) or save a new secret", webhook, err)
		}
		e.secret = plain
	}
	if e.previousSealed != "" && e.secretErr == "" {
		plain, err := s.box.Open(e.previousSealed)
		if err != nil {
			e.secretErr = fmt.Sprintf("webhook %d: previous secret: %v; configure the key that encrypted it (secrets.previous_keys) or rotate the secret again", webhook, err)
		}
		e.previous = plain
	}
	var problem string
	e.headers, problem = s.openHeaders(decodeHeaders(headers))
	if problem != "" && e.secretErr == "" {
		// Never send without the credential the admin meant it to carry.
		e.secretErr = fmt.Sprintf("webhook %d: %s; configure the key that encrypted it (secrets.previous_keys) or save the headers again", webhook, problem)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxEndpoints {
		c.m = make(map[int64]*endpoint)
	}
	c.m[webhook] = e
	c.mu.Unlock()
	return e
}

// fill sets c's webhook fields from e.
func (e *endpoint) fill(c *Claimed) {
	c.URL, c.Secret, c.SecretError, c.Headers, c.Format = e.url, e.secret, e.secretErr, e.headers, e.format
	c.PreviousSecret, c.PreviousSecretUntil, c.StandardWebhooks = e.previous, e.previousUntil, e.standard
}

// formatName returns a stored payload format as a string; the table allows
// only these three, and an absent one (a row read without the column) is
// raw.
func formatName(b []byte) string {
	switch string(b) {
	case "", FormatRaw:
		return FormatRaw
	case FormatSlack:
		return FormatSlack
	case FormatTeams:
		return FormatTeams
	}
	return string(b)
}

// Payload formats of a webhook (the webhooks table's format column).
const (
	FormatRaw   = "raw"
	FormatSlack = "slack"
	FormatTeams = "teams"
)
