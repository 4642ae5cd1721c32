// Package console is the admin guide's Webhooks page in a browser: a
// company admin signs in with their admin token and lists, registers,
// edits, tests, disables, deletes webhooks, looks at deliveries, re-fires
// them, replays a time range and reads the audit log, without touching
// the JSON API.
//
// It promises that the page can do nothing the API refuses and nothing the
// API can do is missing: every operation goes through the admin package's
// exported operations (the same validation, tenancy, audit log and
// sending). Pages are server-rendered from html/template (every value
// escaped) with assets embedded in the binary; they work without
// JavaScript, which only adds the in-place Active toggle, copy and
// generate buttons, and keeps a form that is being sent from being sent
// again (a double click). Responses carry a strict Content-Security-Policy
// without inline script or style.
//
// Sign-in exchanges the token for a session kept in memory (see sessions):
// the browser holds only a random session id in an HttpOnly, SameSite=Strict
// cookie; every state-changing form carries the session's CSRF token.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/smartmaintenance/relay/admin"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure a Console.
type Options struct {
	// Admin is the API whose operations the pages perform.
	Admin *admin.Server
	// Prefix is the path the console is served under. Default "/ui/".
	Prefix string
	// SessionTTL is how long a sign-in lasts. Default 8 hours.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions kept in memory. Default 10,000.
	MaxSessions int
	// Now is the clock (tests move it). Default time.Now.
	Now func() time.Time
	// Logger receives errors. Default: discard.
	Logger *slog.Logger
}

// Console serves the pages.
type Console struct {
	o        Options
	api      *admin.Server
	log      *slog.Logger
	mux      *http.ServeMux
	pages    map[string]*template.Template
	assets   map[string]asset // by hashed name
	assetURL map[string]string
	sessions *sessions
}

// asset is an embedded static file served under a name with its hash.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// New builds the console.
func New(o Options) (*Console, error) {
	if o.Admin == nil {
		return nil, fmt.Errorf("console: no admin server")
	}
	if o.Prefix == "" {
		o.Prefix = "/ui/"
	}
	if !strings.HasPrefix(o.Prefix, "/") || !strings.HasSuffix(o.Prefix, "/") {
		return nil, fmt.Errorf("console: prefix %q must start and end with /", o.Prefix)
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 8 * time.Hour
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{o: o, api: o.Admin, log: o.Logger, mux: http.NewServeMux(),
		assets: map[string]asset{}, assetURL: map[string]string{},
		sessions: newSessions(o.MaxSessions, o.SessionTTL, o.Now)}
	if err := c.loadAssets(); err != nil {
		return nil, err
	}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// Prefix is the path the console is served under.
func (c *Console) Prefix() string { return c.o.Prefix }

// ServeHTTP serves the console; every answer carries the security headers
// and every request body is bounded (limitBody) before a handler runs.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !c.limitBody(w, r) {
		return
	}
	c.mux.ServeHTTP(w, r)
}

// Request bodies are bounded: the console is served on the admin API's
// listener but not through its handlers (admin's wrap), so it bounds its
// own, or ParseForm would read 10 MB of a form (and a multipart reader
// more) into memory, before sign-in too. maxBody is the admin API's bound,
// which docs/SECURITY.md promises for the listener: the largest form the
// page sends, a webhook with 32 KiB of header values, percent-encoded, is
// about 110 KiB. maxSigninBody bounds the sign-in form, the only body read
// before sign-in, which carries a token, its CSRF value and a path back.
const (
	maxBody       = 1 << 20
	maxSigninBody = 64 << 10
)

// limitBody bounds r's body. A body that says it is longer
// (Content-Length) is answered 413 before any of it is read, and false
// returned; one sent without a length stops at the bound, where ParseForm
// fails with an *http.MaxBytesError (formProblem answers it 413).
func (c *Console) limitBody(w http.ResponseWriter, r *http.Request) bool {
	limit := int64(maxBody)
	if r.URL.Path == c.o.Prefix+"signin" {
		limit = maxSigninBody
	}
	if r.ContentLength > limit {
		c.render(w, http.StatusRequestEntityTooLarge, "error", page{Title: "Too large", Data: tooLarge(limit)})
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	return true
}

// formProblem is the answer to a form ParseForm could not read: 413 for a
// body over the bound, 400 for one that is not a form.
func formProblem(err error) (status int, title, msg string) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge, "Too large", tooLarge(tooBig.Limit)
	}
	return http.StatusBadRequest, "Bad request", "The form could not be read."
}

// tooLarge says that a form was over limit bytes.
func tooLarge(limit int64) string {
	size := fmt.Sprintf("%d KiB", limit>>10)
	if limit >= 1<<20 {
		size = fmt.Sprintf("%d MiB", limit>>20)
	}
	return "The form is larger than " + size + ", the most this page accepts; nothing was changed."
}

func (c *Console) loadAssets() error {
	return fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		hash := hex.EncodeToString(sum[:])[:12]
		name := path.Base(p)
		ext := path.Ext(name)
		hashed := strings.TrimSuffix(name, ext) + "." + hash + ext
		ctype := map[string]string{".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
			".svg": "image/svg+xml"}[ext]
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		c.assets[hashed] = asset{body: b, ctype: ctype, etag: `"` + hash + `"`}
		c.assetURL[name] = c.o.Prefix + "static/" + hashed
		return nil
	})
}

// serveAsset serves a static file: its name carries its content hash, so
// it may be cached for a year; the ETag answers revalidations.
func (c *Console) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := c.assets[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("ETag", a.etag)
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(a.body)
}
