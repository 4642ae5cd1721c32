package admin

import (
	"fmt"
	"strings"
	"time"

	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// DefaultSecretOverlap is how long a replaced secret keeps signing beside
// the new one when an update does not say (secret_overlap).
const DefaultSecretOverlap = 24 * time.Hour

// signingView is what the API shows of a webhook's Standard Webhooks
// setting and of a rotation's overlap window (never a secret).
type signingView struct {
	StandardWebhooks bool `json:"standard_webhooks"`
	// PreviousSecretValidUntil is the end of the overlap window of the
	// last rotation, while it lasts: until then requests are signed with
	// the previous secret too. Null otherwise.
	PreviousSecretValidUntil *time.Time `json:"previous_secret_valid_until"`
}

func viewSigning(w store.Webhook) signingView {
	v := signingView{StandardWebhooks: w.StandardWebhooks}
	if !w.PreviousSecretUntil.IsZero() {
		t := w.PreviousSecretUntil
		v.PreviousSecretValidUntil = &t
	}
	return v
}

// standardSecret is a generated secret in the whsec_ form the Standard
// Webhooks libraries take; "" for none.
func standardSecret(secret string) string {
	if secret == "" {
		return ""
	}
	return signature.StandardKey([]byte(secret))
}

// secretOverlap reads an update's secret_overlap: a Go duration ("24h",
// "90m") or "0", from 0 to store.MaxSecretOverlap, given only with a new
// secret. Absent: DefaultSecretOverlap.
func secretOverlap(in webhookInput) (time.Duration, error) {
	if in.SecretOverlap == nil {
		return DefaultSecretOverlap, nil
	}
	if !in.RotateSecret && in.Secret == nil {
		return 0, invalid("invalid_webhook", []problem{{"secret_overlap", "only with rotate_secret or a new secret"}})
	}
	return ParseSecretOverlap(*in.SecretOverlap)
}

// ParseSecretOverlap reads an overlap window as the API, the CLI and the
// Webhooks page take it: a duration such as "24h", "90m" or "0", at most
// store.MaxSecretOverlap (7 days).
func ParseSecretOverlap(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, invalid("invalid_webhook", []problem{{"secret_overlap",
			fmt.Sprintf("%q is not a duration; use e.g. \"24h\", \"90m\" or \"0\" for none", s)}})
	case d < 0 || d > store.MaxSecretOverlap:
		return 0, invalid("invalid_webhook", []problem{{"secret_overlap",
			fmt.Sprintf("%v is out of range; from 0 to %v (7 days)", d, store.MaxSecretOverlap)}})
	}
	return d, nil
}
