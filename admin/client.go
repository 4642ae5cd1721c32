package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client calls the admin API, for the relay command's webhooks and events
// subcommands.
type Client struct {
	// URL is the API's base URL, e.g. "http://127.0.0.1:8081".
	URL   string
	Token string
	HTTP  *http.Client
}

// APIError is an error answer of the API.
type APIError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// Do sends a request with body (nil for none) and returns the answer's body
// (JSON), or an *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body any) (json.RawMessage, error) {
	if c.URL == "" {
		return nil, fmt.Errorf("no admin API URL: pass --url or set RELAY_ADMIN_URL")
	}
	if c.Token == "" {
		return nil, fmt.Errorf("no admin token: pass --token or set RELAY_ADMIN_TOKEN")
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, rd)
	if err != nil {
		return nil, fmt.Errorf("admin API URL: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("admin API: read answer: %w", err)
	}
	if res.StatusCode >= 300 {
		var e struct {
			Error APIError `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
			return nil, &APIError{Status: res.StatusCode, Code: "http_error", Message: strings.TrimSpace(string(b))}
		}
		e.Error.Status = res.StatusCode
		return nil, &e.Error
	}
	return b, nil
}
