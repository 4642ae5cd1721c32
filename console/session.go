package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// cookieName holds the session id; signinCookie holds the sign-in form's
// CSRF value before there is a session.
const (
	cookieName   = "relay_console"
	signinCookie = "relay_console_signin"
)

// session is one sign-in. It keeps the token's SHA-256 (never the token),
// and every request checks that hash against the tokens configured now.
type session struct {
	tokenHash [sha256.Size]byte
	// company is the company acted on: the token's, or the one an operator
	// picked (0 until then).
	company int64
	csrf    string
	expires time.Time
	flash   []flash
}

// flash is a message shown once on the next page.
type flash struct {
	Kind string // "ok", "warn", "error"
	Text string
}

// sessions are kept in memory: a restart signs everyone out, and a token
// removed from the configuration (which takes a restart) ends its sessions
// then at the latest. The store is bounded; when full, the session closest
// to its end is dropped.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	max  int
	ttl  time.Duration
	now  func() time.Time
}

func newSessions(max int, ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{byID: map[string]*session{}, max: max, ttl: ttl, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns its id.
func (ss *sessions) create(hash [sha256.Size]byte, company int64) (string, *session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	if len(ss.byID) >= ss.max {
		var oldest string
		for id, s := range ss.byID {
			if !s.expires.After(now) {
				delete(ss.byID, id)
				continue
			}
			if oldest == "" || s.expires.Before(ss.byID[oldest].expires) {
				oldest = id
			}
		}
		if len(ss.byID) >= ss.max && oldest != "" {
			delete(ss.byID, oldest)
		}
	}
	id := randomToken()
	s := &session{tokenHash: hash, company: company, csrf: randomToken(), expires: now.Add(ss.ttl)}
	ss.byID[id] = s
	return id, s
}

// get returns a live session; an expired one is removed.
func (ss *sessions) get(id string) (*session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byID[id]
	if !ok {
		return nil, false
	}
	if !s.expires.After(ss.now()) {
		delete(ss.byID, id)
		return nil, false
	}
	return s, true
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	delete(ss.byID, id)
	ss.mu.Unlock()
}

// update changes a session under the lock.
func (ss *sessions) update(s *session, f func(*session)) {
	ss.mu.Lock()
	f(s)
	ss.mu.Unlock()
}

// takeFlash returns and clears the session's messages.
func (ss *sessions) takeFlash(s *session) []flash {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

// secure reports whether the request came over TLS (directly or, as the
// proxy says, in front of the relay): the cookie is then Secure.
func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: c.o.Prefix, HttpOnly: true,
		Secure: secure(r), SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge.Seconds())})
}

func (c *Console) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: c.o.Prefix, HttpOnly: true,
		Secure: secure(r), SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// sameToken compares CSRF tokens in constant time.
func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// sameOrigin refuses a state-changing request another site's page sent:
// browsers name the sender in Origin (and Sec-Fetch-Site). Requests without
// either (non-browser clients) still need the CSRF token.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return o == ""
	}
	return o == "http://"+r.Host || o == "https://"+r.Host
}
