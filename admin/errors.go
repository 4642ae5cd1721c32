package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smartmaintenance/relay/store"
)

// apiError is the body of every error answer:
// {"error": {"code": "...", "message": "...", "field": "..."}}.
type apiError struct {
	status  int
	Code    string    `json:"code"`
	Message string    `json:"message"`
	Field   string    `json:"field,omitempty"`
	Details []problem `json:"details,omitempty"`
	// retryAfter, in seconds, is sent as Retry-After when not 0.
	retryAfter int
}

// problem is one validation problem.
type problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, field, message string) *apiError {
	return &apiError{status: status, Code: code, Field: field, Message: message}
}

// invalid is a 422 listing every problem; the first names the field.
func invalid(code string, problems []problem) *apiError {
	e := &apiError{status: http.StatusUnprocessableEntity, Code: code, Details: problems}
	if len(problems) > 0 {
		e.Field, e.Message = problems[0].Field, problems[0].Field+": "+problems[0].Message
	}
	if len(problems) > 1 {
		e.Message += " (and " + strconv.Itoa(len(problems)-1) + " more in details)"
	}
	return e
}

// fromCheck turns config.CheckWebhook's "field: problem" lines into problems.
func fromCheck(lines []string) []problem {
	out := make([]problem, 0, len(lines))
	for _, l := range lines {
		field, msg, ok := strings.Cut(l, ": ")
		if !ok {
			field, msg = "", l
		}
		out = append(out, problem{Field: field, Message: msg})
	}
	return out
}

var (
	errNotFound         = newError(http.StatusNotFound, "not_found", "", "no such webhook")
	errDeliveryNotFound = newError(http.StatusNotFound, "not_found", "", "no such delivery for this webhook")
)

// deliveryError answers a delivery the webhook does not have.
func deliveryError(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errDeliveryNotFound
	}
	return err
}

// isNotFound reports whether err says a row does not exist.
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// storeError maps the store's errors to answers; anything else is internal.
func storeError(err error) *apiError {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound
	case errors.Is(err, store.ErrConflict):
		return newError(http.StatusConflict, "name_taken", "name", "this company already has a webhook with this name")
	case errors.Is(err, store.ErrFileManaged):
		return newError(http.StatusConflict, "file_managed", "",
			"this webhook is defined in the relay's config file (webhooks.source: file); change it there, or switch to webhooks.source: table")
	case errors.Is(err, store.ErrReplayActive):
		return newError(http.StatusConflict, "replay_running", "",
			"this webhook already has a replay queued or running; wait for it, or cancel it first")
	case errors.Is(err, store.ErrReplayOver):
		return newError(http.StatusConflict, "replay_over", "", "the replay is over already (done, cancelled or failed)")
	case errors.Is(err, store.ErrNotFinished):
		return newError(http.StatusConflict, "not_finished", "",
			"the delivery is still pending or retrying; it will be sent on its schedule")
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		// The relay's database is down or unreachable: the request may
		// work in a moment, and the relay's log says why.
		return newError(http.StatusServiceUnavailable, "store_unavailable", "",
			"the relay's database cannot be reached right now; try again shortly")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	writeJSON(w, e.status, map[string]*apiError{"error": e})
}
