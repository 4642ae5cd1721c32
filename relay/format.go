package relay

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/smartmaintenance/relay/message"
	"github.com/smartmaintenance/relay/store"
)

// defaultMessages renders for senders configured without a renderer.
var defaultMessages = sync.OnceValue(message.Default)

// render returns the body of c for its webhook's payload format. A
// template that fails on c's payload still yields a body (the plain
// summary) and is reported; an unknown format fails the attempt.
func (s *sender) render(c *store.Claimed) ([]byte, error) {
	m := s.messages
	if m == nil {
		m = defaultMessages()
	}
	body, err := m.Render(c.Format, c.Body)
	if body == nil {
		return nil, fmt.Errorf("webhook %d: %w", c.WebhookID, err)
	}
	if err != nil && s.renderWarn != nil {
		s.renderWarn(c, err)
	}
	return body, nil
}

// renderWarnEvery is how often one failing template of one webhook is
// logged: every delivery would flood the log.
const renderWarnEvery = time.Minute

// renderWarner returns what logs failed templates to log: each failure
// (webhook, message) at most once per renderWarnEvery.
func renderWarner(log *slog.Logger) func(*store.Claimed, error) {
	if log == nil {
		return nil
	}
	type key struct {
		webhook int64
		msg     string
	}
	var mu sync.Mutex
	last := map[key]time.Time{}
	return func(c *store.Claimed, err error) {
		k := key{c.WebhookID, err.Error()}
		now := time.Now()
		mu.Lock()
		if t, ok := last[k]; ok && now.Sub(t) < renderWarnEvery {
			mu.Unlock()
			return
		}
		if len(last) >= maxCached {
			clear(last)
		}
		last[k] = now
		mu.Unlock()
		log.Warn("message template failed; sent the plain summary instead (fix formats.templates)",
			"webhook_id", c.WebhookID, "delivery_id", c.ID, "event", c.EventType, "format", c.Format, "error", err)
	}
}
