package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/internal/syncbuf"
)

// TestDemo runs the README's first command for a few seconds and checks
// that signed events arrived and were verified, that the closing summary
// counts as delivered only what the receiver accepted (not the attempts it
// answered 503 on purpose), that it prints tokens as relay token does, and
// that the Webhooks page it prints accepts the company admin's token.
func TestDemo(t *testing.T) {
	var out syncbuf.Buffer
	var errOut bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{Duration: 8 * time.Second, Interval: 100 * time.Millisecond}, &out, &errOut)
	}()
	page := regexp.MustCompile(`webhooks page: (http://\S+/ui/) \(sign in with the PT Kahatex admin token (\S+)\)`)
	var m []string
	// The line comes once a throwaway PostgreSQL is up, which on a busy
	// machine takes several seconds.
	for deadline := time.Now().Add(60 * time.Second); m == nil && time.Now().Before(deadline); {
		m = page.FindStringSubmatch(out.String())
		time.Sleep(20 * time.Millisecond)
	}
	if m == nil {
		t.Errorf("the demo does not print the page and its token:\n%s", out.String())
	} else {
		signIn(t, m[1], m[2])
	}
	if err := <-done; err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	s := out.String()
	if !strings.Contains(s, "signature ok") || !strings.Contains(s, " 0 failed verification") {
		t.Fatalf("demo output:\n%s", s)
	}
	// The Slack-format webhook with the filter gets the first request,
	// PT Kahatex's critical one, as a Slack message, and never a high one.
	if !regexp.MustCompile(`✓ repair_request\.created .*signature ok .*\n    Slack message: Critical repair request #\d+ filed: Strange noise from gearbox \(PT Kahatex\)`).MatchString(s) {
		t.Errorf("no Slack message for the critical repair request:\n%s", s)
	}
	if strings.Contains(s, "Slack message: High") || strings.Contains(s, "Slack message: Repair request") {
		t.Errorf("the Slack webhook's filter let a request through that is not critical:\n%s", s)
	}
	accepted := strings.Count(s, "✓ ")
	refused := strings.Count(s, "answered 503 to delivery")
	if refused == 0 {
		t.Fatalf("no attempt was answered 503; the count cannot be told apart:\n%s", s)
	}
	want := fmt.Sprintf("\n%d deliveries delivered with a verified signature; %d attempts answered 503 on purpose (retried), 0 failed verification\n", accepted, refused)
	if !strings.Contains(s, want) {
		t.Errorf("summary does not say %q:\n%s", strings.TrimSpace(want), s[max(0, len(s)-400):])
	}
	if !regexp.MustCompile(`(?m)^  export RELAY_ADMIN_URL=http://127\.0\.0\.1:\d+ RELAY_ADMIN_TOKEN=rat_[A-Za-z0-9_-]{43}$`).MatchString(s) {
		t.Errorf("no export line with a rat_ token:\n%s", s[:min(len(s), 1200)])
	}
}

// signIn signs in to the page with token and expects the company's list.
func signIn(t *testing.T, base, token string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	var body string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		res, err := c.Get(base + "signin")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		body = string(b)
		break
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if csrf == nil {
		t.Fatalf("no sign-in form at %s:\n%s", base, body)
	}
	res, err := c.PostForm(base+"signin", url.Values{"csrf": {csrf[1]}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "Kahatex CMMS bridge") {
		t.Fatalf("after sign-in: %d\n%s", res.StatusCode, b)
	}
}
