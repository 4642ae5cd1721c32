package main

import (
	"fmt"
	"io"
	"time"
)

// printSigning prints a webhook's Standard Webhooks setting, the whsec_
// form of a secret just generated, and the end of a rotation's overlap
// window.
func printSigning(w io.Writer, h webhookJSON, standardSecret string) {
	if h.StandardWebhooks {
		fmt.Fprintln(w, "standard webhooks: on (webhook-id, webhook-timestamp, webhook-signature)")
	}
	if standardSecret != "" {
		fmt.Fprintf(w, "the same secret for Standard Webhooks libraries: %s\n", safe(standardSecret))
	}
	if t := h.PreviousSecretValidUntil; t != nil {
		fmt.Fprintf(w, "previous secret still signs too until %s (X-SMTM-Signature-Previous)\n", t.UTC().Format(time.RFC3339))
	}
}
