package console

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/store"
)

// req is a signed-in request.
type req struct {
	w       http.ResponseWriter
	r       *http.Request
	sid     string
	sess    *session
	actor   admin.Actor // scoped to company
	company admin.Company
}

func (c *Console) routes() {
	p := c.o.Prefix
	m := c.mux
	m.HandleFunc("GET "+p+"static/{name}", c.serveAsset)
	m.HandleFunc("GET "+p+"{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, p+"webhooks", http.StatusSeeOther)
	})
	m.HandleFunc("GET "+p+"signin", c.signinPage)
	m.HandleFunc("POST "+p+"signin", c.signin)
	m.HandleFunc("POST "+p+"signout", c.signed(false, c.signout))
	m.HandleFunc("GET "+p+"company", c.signed(false, c.companyPage))
	m.HandleFunc("POST "+p+"company", c.signed(false, c.pickCompany))
	m.HandleFunc("GET "+p+"webhooks", c.signed(true, c.list))
	m.HandleFunc("GET "+p+"webhooks/new", c.signed(true, c.newForm))
	m.HandleFunc("POST "+p+"webhooks/new", c.signed(true, c.create))
	m.HandleFunc("GET "+p+"webhooks/{id}", c.signed(true, c.detail))
	m.HandleFunc("GET "+p+"webhooks/{id}/edit", c.signed(true, c.editForm))
	m.HandleFunc("POST "+p+"webhooks/{id}/edit", c.signed(true, c.update))
	m.HandleFunc("POST "+p+"webhooks/{id}/active", c.signed(true, c.setActive))
	m.HandleFunc("GET "+p+"webhooks/{id}/test", c.signed(true, c.testPage))
	m.HandleFunc("POST "+p+"webhooks/{id}/test", c.signed(true, c.sendTest))
	m.HandleFunc("GET "+p+"webhooks/{id}/delete", c.signed(true, c.deletePage))
	m.HandleFunc("POST "+p+"webhooks/{id}/delete", c.signed(true, c.delete))
	m.HandleFunc("POST "+p+"webhooks/{id}/deliveries/{delivery}/refire", c.signed(true, c.refire))
	m.HandleFunc("POST "+p+"webhooks/{id}/refire", c.signed(true, c.refireFailed))
	m.HandleFunc("POST "+p+"webhooks/{id}/replays", c.signed(true, c.createReplay))
	m.HandleFunc("POST "+p+"webhooks/{id}/replays/{replay}/cancel", c.signed(true, c.cancelReplay))
	m.HandleFunc("GET "+p+"webhooks/{id}/audit", c.signed(true, c.webhookAudit))
	m.HandleFunc("GET "+p+"audit", c.signed(true, c.companyAudit))
	m.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
		c.render(w, http.StatusNotFound, "error", page{Title: "Not found", Data: "There is no such page."})
	})
}

// signed runs h for a request with a live session whose token is still
// configured; POSTs must carry the session's CSRF token and come from this
// site. needCompany sends an operator who has not picked a company to the
// picker.
func (c *Console) signed(needCompany bool, h func(*req) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(cookieName)
		var sess *session
		ok := false
		if err == nil {
			sess, ok = c.sessions.get(ck.Value)
		}
		var actor admin.Actor
		if ok {
			if actor, ok = c.api.ActorByHash(sess.tokenHash); !ok {
				c.sessions.remove(ck.Value) // the token was removed
			}
		}
		if !ok {
			if r.Method != http.MethodGet {
				c.render(w, http.StatusUnauthorized, "error", page{Title: "Signed out",
					Data: "Your session has ended. Sign in again."})
				return
			}
			http.Redirect(w, r, c.o.Prefix+"signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				status, title, msg := formProblem(err)
				c.render(w, status, "error", page{Title: title, Data: msg})
				return
			}
			tok := r.PostForm.Get("csrf")
			if tok == "" {
				tok = r.Header.Get("X-CSRF-Token")
			}
			if !sameOrigin(r) || !sameToken(tok, sess.csrf) {
				c.render(w, http.StatusForbidden, "error", page{Title: "Refused",
					Data: "This form was not sent from this page (its security token is missing or stale). Reload the page and try again."})
				return
			}
		}
		rq := &req{w: w, r: r, sid: ck.Value, sess: sess}
		company := sess.company
		if actor.Operator() {
			if company == store.AllCompanies && needCompany {
				http.Redirect(w, r, c.o.Prefix+"company", http.StatusSeeOther)
				return
			}
			actor = actor.InCompany(company)
		}
		rq.actor = actor
		rq.company = c.api.CompanyInfo(r.Context(), actor.CompanyID())
		if err := h(rq); err != nil {
			c.fail(rq, err)
		}
	}
}

// page fills the common parts of a signed-in page.
func (c *Console) page(rq *req, title, nav string, data any) page {
	name := rq.company.Name
	if name == "" && rq.actor.CompanyID() != store.AllCompanies {
		name = "Company " + strconv.FormatInt(rq.actor.CompanyID(), 10)
	}
	base, _ := c.api.ActorByHash(rq.sess.tokenHash)
	return page{Title: title, Nav: nav, Signed: true, CSRF: rq.sess.csrf, ActorName: rq.actor.Name(),
		Operator: base.Operator(), CompanyName: name, CompanyID: rq.actor.CompanyID(), Loc: rq.company.Location,
		Flash: c.sessions.takeFlash(rq.sess), Data: data}
}

// fail answers an error as the API would, as a page.
func (c *Console) fail(rq *req, err error) {
	p, ok := admin.Explain(err)
	if !ok {
		c.log.Error("console request failed", "path", rq.r.URL.Path, "actor", rq.actor.Name(), "error", err)
	}
	title := "Something went wrong"
	msg := p.Message
	if p.Status == http.StatusNotFound {
		title = "Not found"
	}
	c.render(rq.w, p.Status, "error", c.page(rq, title, "", msg))
}

func (c *Console) addFlash(rq *req, kind, text string) {
	c.sessions.update(rq.sess, func(s *session) { s.flash = append(s.flash, flash{Kind: kind, Text: text}) })
}

func (c *Console) redirect(rq *req, to string) {
	http.Redirect(rq.w, rq.r, to, http.StatusSeeOther)
}

// pathID is the {id} of the path; anything but a positive number is a
// webhook nobody has.
func pathID(r *http.Request) int64 {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return -1
	}
	return id
}

// --- sign-in

type signinData struct {
	CSRF, Next, Error string
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(cookieName); err == nil {
		if s, ok := c.sessions.get(ck.Value); ok {
			if _, ok := c.api.ActorByHash(s.tokenHash); ok {
				http.Redirect(w, r, c.o.Prefix+"webhooks", http.StatusSeeOther)
				return
			}
		}
	}
	c.renderSignin(w, r, http.StatusOK, "")
}

func (c *Console) renderSignin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	c.setCookie(w, r, signinCookie, tok, 30*time.Minute)
	next := r.FormValue("next")
	c.render(w, status, "signin", page{Title: "Sign in", Data: signinData{CSRF: tok, Next: next, Error: msg}})
}

// signin exchanges a token for a session. The sign-in form's CSRF value is
// a cookie set with the form (there is no session yet).
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		status, _, msg := formProblem(err)
		c.renderSignin(w, r, status, msg)
		return
	}
	ck, err := r.Cookie(signinCookie)
	if err != nil || !sameOrigin(r) || !sameToken(r.PostForm.Get("csrf"), ck.Value) {
		c.renderSignin(w, r, http.StatusForbidden, "The sign-in form was stale. Please try again.")
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if token == "" {
		c.renderSignin(w, r, http.StatusUnprocessableEntity, "Enter your admin token.")
		return
	}
	hash := sha256.Sum256([]byte(token))
	actor, ok := c.api.ActorByHash(hash)
	if !ok {
		c.renderSignin(w, r, http.StatusUnauthorized,
			"This token is not valid: it is unknown, mistyped, or has been revoked. Ask your relay operator for a current one.")
		return
	}
	id, _ := c.sessions.create(hash, actor.CompanyID())
	c.setCookie(w, r, cookieName, id, c.o.SessionTTL)
	c.clearCookie(w, r, signinCookie)
	next := r.PostForm.Get("next")
	if !strings.HasPrefix(next, c.o.Prefix) || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		next = c.o.Prefix + "webhooks"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(rq *req) error {
	c.sessions.remove(rq.sid)
	c.clearCookie(rq.w, rq.r, cookieName)
	c.redirect(rq, c.o.Prefix+"signin")
	return nil
}

// --- company picker (operators)

type companyChoice struct {
	ID      int64
	Name    string
	Current bool
}

func (c *Console) companyPage(rq *req) error {
	base, _ := c.api.ActorByHash(rq.sess.tokenHash)
	if !base.Operator() {
		c.redirect(rq, c.o.Prefix+"webhooks")
		return nil
	}
	hooks, err := c.api.ListWebhooks(rq.r.Context(), base)
	if err != nil {
		return err
	}
	var ids []int64
	for _, h := range hooks {
		if !slices.Contains(ids, h.CompanyID) {
			ids = append(ids, h.CompanyID)
		}
	}
	var out []companyChoice
	for _, id := range ids {
		out = append(out, companyChoice{ID: id, Name: c.api.CompanyInfo(rq.r.Context(), id).Name, Current: id == rq.sess.company})
	}
	c.render(rq.w, http.StatusOK, "company", c.page(rq, "Pick a company", "company", out))
	return nil
}

func (c *Console) pickCompany(rq *req) error {
	base, _ := c.api.ActorByHash(rq.sess.tokenHash)
	id, err := strconv.ParseInt(strings.TrimSpace(rq.r.PostForm.Get("company")), 10, 64)
	if !base.Operator() || err != nil || id <= 0 {
		c.addFlash(rq, "error", "Company: enter a company id (a positive number).")
		c.redirect(rq, c.o.Prefix+"company")
		return nil
	}
	c.sessions.update(rq.sess, func(s *session) { s.company = id })
	c.redirect(rq, c.o.Prefix+"webhooks")
	return nil
}

// --- list

func (c *Console) list(rq *req) error {
	hooks, err := c.api.ListWebhooks(rq.r.Context(), rq.actor)
	if err != nil {
		return err
	}
	c.render(rq.w, http.StatusOK, "list", c.page(rq, "Webhooks", "webhooks", hooks))
	return nil
}

// --- new and edit

type headerRow struct {
	Name, Value string
	// Saved: the header is stored; its value is not shown, and an empty
	// value keeps it.
	Saved bool
	// Error is why the row was refused: an empty value with no saved
	// value to keep.
	Error string
}

type hookForm struct {
	ID           int64
	Edit         bool
	Name, URL    string
	Description  string
	Format       string
	Filter       string
	Secret       string
	RotateSecret bool
	HasSecret    bool
	// StandardWebhooks is the checkbox; SecretOverlap the window chosen
	// for a new secret (edit); PreviousUntil the end of the current one.
	StandardWebhooks bool
	SecretOverlap    string
	PreviousUntil    time.Time
	// PreviousValid: a rotation's window lasts (PreviousUntil is ahead),
	// so a new secret now would end the previous one's signing at once.
	PreviousValid bool
	// Active is the new form's checkbox (checked by default).
	Active     bool
	Events     map[string]bool
	AllEvents  []string
	Headers    []headerRow
	Production bool
	Errors     map[string]string
	// RowErrors counts the header rows refused (headerRow.Error).
	RowErrors int
	FormError string
}

// blankRows are the empty header rows a form offers without JavaScript.
const blankRows = 2

func (c *Console) newForm(rq *req) error {
	f := hookForm{Events: map[string]bool{}, AllEvents: c.api.Events(), Production: c.api.Production(), Format: "raw", Active: true}
	f.Headers = make([]headerRow, blankRows)
	c.render(rq.w, http.StatusOK, "form", c.page(rq, "New webhook", "webhooks", f))
	return nil
}

// editable is the webhook a page changes: one of the actor's company that
// the config file does not manage.
func (c *Console) editable(rq *req) (store.WebhookStats, error) {
	h, err := c.api.Webhook(rq.r.Context(), rq.actor, pathID(rq.r))
	if err == nil && h.ManagedBy == "file" {
		err = store.ErrFileManaged
	}
	return h, err
}

func (c *Console) editForm(rq *req) error {
	h, err := c.editable(rq)
	if err != nil {
		return err
	}
	f := hookForm{ID: h.ID, Edit: true, Name: h.Name, URL: h.URL, Description: h.Description, Format: h.Format, Filter: h.Filter,
		HasSecret: h.Secret != "" || h.SecretError != "", Events: map[string]bool{},
		AllEvents: c.api.Events(), Production: c.api.Production(),
		StandardWebhooks: h.StandardWebhooks, PreviousUntil: h.PreviousSecretUntil, PreviousValid: c.previousValid(h.PreviousSecretUntil)}
	for _, e := range h.Events {
		f.Events[e] = true
	}
	names := make([]string, 0, len(h.Headers))
	for k := range h.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		f.Headers = append(f.Headers, headerRow{Name: k, Saved: true})
	}
	f.Headers = append(f.Headers, make([]headerRow, blankRows)...)
	c.render(rq.w, http.StatusOK, "form", c.page(rq, "Edit "+h.Name, "webhooks", f))
	return nil
}

// previousValid reports whether a rotated-out secret still signs until
// until (the store gives a zero time once the window has ended).
func (c *Console) previousValid(until time.Time) bool {
	return !until.IsZero() && until.After(c.o.Now())
}

// savedHeader is the stored value of the header named name, matched as
// HTTP does, regardless of case (an exact match first).
func savedHeader(saved map[string]string, name string) (string, bool) {
	if v, ok := saved[name]; ok {
		return v, true
	}
	for k, v := range saved {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// readForm reads the webhook form as typed. saved are the stored headers
// (edit), whose values an empty value field keeps: for a row named as a
// saved header, case aside (a case-only rename keeps the value under the
// new spelling). A row with an empty value and no saved header of its name
// (new, or renamed) is refused: saved, it would send an empty credential
// while the page shows it masked as set.
func (c *Console) readForm(rq *req, saved map[string]string) (hookForm, admin.WebhookInput) {
	pf := rq.r.PostForm
	f := hookForm{Name: pf.Get("name"), URL: pf.Get("url"), Description: pf.Get("description"), Format: pf.Get("format"),
		Filter: pf.Get("filter"), Secret: pf.Get("secret"), RotateSecret: pf.Get("rotate_secret") != "", Events: map[string]bool{},
		AllEvents: c.api.Events(), Production: c.api.Production(), Errors: map[string]string{}}
	events := []string{}
	for _, e := range pf["events"] {
		if !f.Events[e] {
			f.Events[e] = true
			events = append(events, e)
		}
	}
	names, values := pf["header_name"], pf["header_value"]
	headers := map[string]string{}
	for i, n := range names {
		v := ""
		if i < len(values) {
			v = values[i]
		}
		n = strings.TrimSpace(n)
		if n == "" {
			continue // a cleared name removes the header
		}
		row := headerRow{Name: n, Value: v}
		if v == "" {
			if sv, ok := savedHeader(saved, n); ok {
				row.Saved, v = true, sv
			} else {
				row.Error = fmt.Sprintf("header %q: enter its value (a new or renamed header has no saved value to keep)", n)
				f.RowErrors++
			}
		}
		f.Headers = append(f.Headers, row)
		headers[n] = v
	}
	f.Headers = append(f.Headers, make([]headerRow, blankRows)...)
	f.StandardWebhooks, f.SecretOverlap = pf.Get("standard_webhooks") != "", pf.Get("secret_overlap")
	in := admin.WebhookInput{Name: &f.Name, URL: &f.URL, Description: &f.Description, Filter: &f.Filter, Events: &events,
		Headers: &headers, RotateSecret: f.RotateSecret, StandardWebhooks: &f.StandardWebhooks}
	if _, given := pf["format"]; given {
		in.Format = &f.Format
	}
	if f.Secret != "" {
		in.Secret = &f.Secret
	}
	if f.SecretOverlap != "" && (f.RotateSecret || f.Secret != "") {
		in.SecretOverlap = &f.SecretOverlap
	}
	return f, in
}

// formFields are the form's fields that errors can stand next to.
var formFields = []string{"name", "url", "events", "secret", "headers", "description", "format", "filter", "standard_webhooks"}

// formError puts the API's problems next to their fields; it returns false
// for errors that are not about the input.
func formError(f *hookForm, err error) bool {
	p, ok := admin.Explain(err)
	if !ok || p.Status == http.StatusNotFound {
		return false
	}
	for _, fe := range p.Fields {
		field := fe.Field
		if i := strings.IndexAny(field, "[."); i >= 0 {
			field = field[:i]
		}
		if field == "rotate_secret" || field == "secret_overlap" {
			field = "secret"
		}
		if slices.Contains(formFields, field) {
			if f.Errors[field] == "" {
				f.Errors[field] = fe.Message
			}
		} else if f.FormError == "" {
			f.FormError = fe.Field + ": " + fe.Message
		}
	}
	if len(p.Fields) == 0 {
		f.FormError = p.Message
	}
	return true
}

// create registers a webhook. A refused form is shown again as typed, the
// secret too (the admin's own input, on the answer to their own request;
// dropped, saving the corrected form would generate another secret).
// "active" is the Active checkbox after a hidden "false": absent (a form
// without the checkbox) the API's default, active, holds.
func (c *Console) create(rq *req) error {
	f, in := c.readForm(rq, nil)
	f.Active = true
	if vs, given := rq.r.PostForm["active"]; given {
		f.Active = slices.Contains(vs, "true")
		in.Active = &f.Active
	}
	if f.RowErrors > 0 {
		c.render(rq.w, http.StatusUnprocessableEntity, "form", c.page(rq, "New webhook", "webhooks", f))
		return nil
	}
	saved, err := c.api.CreateWebhook(rq.r.Context(), rq.actor, in)
	if err != nil {
		if !formError(&f, err) {
			return err
		}
		c.render(rq.w, http.StatusUnprocessableEntity, "form", c.page(rq, "New webhook", "webhooks", f))
		return nil
	}
	msg := "Webhook “" + saved.Webhook.Name + "” registered. It is active for new events."
	if !saved.Webhook.Active {
		msg = "Webhook “" + saved.Webhook.Name + "” registered, disabled: no event fires it until you enable it. Send a test event to check the wiring first."
	}
	return c.saved(rq, saved, msg)
}

func (c *Console) update(rq *req) error {
	id := pathID(rq.r)
	h, err := c.api.Webhook(rq.r.Context(), rq.actor, id)
	if err != nil {
		return err
	}
	f, in := c.readForm(rq, h.Headers)
	f.ID, f.Edit, f.HasSecret = h.ID, true, h.Secret != "" || h.SecretError != ""
	f.PreviousUntil, f.PreviousValid = h.PreviousSecretUntil, c.previousValid(h.PreviousSecretUntil)
	if f.RowErrors > 0 {
		c.render(rq.w, http.StatusUnprocessableEntity, "form", c.page(rq, "Edit "+h.Name, "webhooks", f))
		return nil
	}
	saved, err := c.api.UpdateWebhook(rq.r.Context(), rq.actor, id, in)
	if err != nil {
		if !formError(&f, err) {
			return err
		}
		c.render(rq.w, http.StatusUnprocessableEntity, "form", c.page(rq, "Edit "+h.Name, "webhooks", f))
		return nil
	}
	return c.saved(rq, saved, "Changes to “"+saved.Webhook.Name+"” saved.")
}

type savedData struct {
	Webhook store.Webhook
	Secret  string
	// StandardSecret is Secret in the whsec_ form of Standard Webhooks.
	StandardSecret string
}

// saved answers a save: a generated secret is shown on this page, once
// (it is not kept anywhere to be shown again); otherwise to the detail page.
func (c *Console) saved(rq *req, s admin.Saved, msg string) error {
	c.addFlash(rq, "ok", msg)
	for _, w := range s.Warnings {
		c.addFlash(rq, "warn", warningText(w))
	}
	if s.Secret != "" {
		p := c.page(rq, "Webhook saved", "webhooks", savedData{Webhook: s.Webhook, Secret: s.Secret, StandardSecret: s.StandardSecret()})
		c.render(rq.w, http.StatusOK, "saved", p)
		return nil
	}
	c.redirect(rq, fmt.Sprintf("%swebhooks/%d", c.o.Prefix, s.Webhook.ID))
	return nil
}

// warningText turns the API's "url: not HTTPS; ..." into a sentence.
func warningText(w string) string {
	if strings.HasPrefix(w, "url: not HTTPS") {
		return "This URL is not HTTPS: payloads may contain personal data (user names, task details) and would travel unencrypted. Use an https:// URL in production."
	}
	return w
}

// --- active toggle

func (c *Console) setActive(rq *req) error {
	id := pathID(rq.r)
	active := rq.r.PostForm.Get("active") == "true"
	h, err := c.api.SetActive(rq.r.Context(), rq.actor, id, active)
	wantJSON := strings.Contains(rq.r.Header.Get("Accept"), "application/json")
	if wantJSON {
		out := map[string]any{}
		status := http.StatusOK
		if err != nil {
			p, ok := admin.Explain(err)
			if !ok {
				c.log.Error("console: toggle", "error", err)
			}
			status, out["error"] = p.Status, p.Message
		} else {
			out["active"], out["name"] = h.Active, h.Name
		}
		rq.w.Header().Set("Content-Type", "application/json")
		rq.w.Header().Set("Cache-Control", "no-store")
		rq.w.WriteHeader(status)
		return json.NewEncoder(rq.w).Encode(out)
	}
	if err != nil {
		return err
	}
	if active {
		c.addFlash(rq, "ok", "“"+h.Name+"” is enabled: new events fire it again.")
	} else {
		c.addFlash(rq, "ok", "“"+h.Name+"” is disabled: no new events fire it until you enable it.")
	}
	back := rq.r.PostForm.Get("back")
	if back != "detail" {
		c.redirect(rq, c.o.Prefix+"webhooks")
		return nil
	}
	c.redirect(rq, fmt.Sprintf("%swebhooks/%d", c.o.Prefix, id))
	return nil
}

// --- detail

const pageSize = 25

type detailData struct {
	Hook       store.WebhookStats
	Warnings   []string
	Status     string
	Cursor     string
	Next       string
	Deliveries []deliveryRow
	RefireFrom string
	RefireTo   string
	Replay     replayPanel
}

type deliveryRow struct {
	store.DeliveryRecord
	Body []byte
}

var statusFilters = map[string][]store.Status{
	"":          nil,
	"failed":    {store.StatusFailed},
	"retrying":  {store.StatusPending, store.StatusRetrying},
	"delivered": {store.StatusDelivered},
}

func encodeCursor(d store.DeliveryRecord) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(d.CreatedAt.UnixMicro(), 10) + "." + d.ID.String()))
}

func decodeCursor(s string) *store.DeliveryCursor {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	at, id, ok := strings.Cut(string(b), ".")
	us, err1 := strconv.ParseInt(at, 10, 64)
	u, err2 := uuid.Parse(id)
	if !ok || err1 != nil || err2 != nil {
		return nil
	}
	return &store.DeliveryCursor{CreatedAt: time.UnixMicro(us), ID: u}
}

const localInput = "2006-01-02T15:04"

func (c *Console) detail(rq *req) error { return c.showDetail(rq, http.StatusOK, nil) }

// showDetail renders the webhook page with status; replay is the Replay
// form as typed (nil: a fresh one).
func (c *Console) showDetail(rq *req, code int, replay *replayForm) error {
	ctx := rq.r.Context()
	h, err := c.api.Webhook(ctx, rq.actor, pathID(rq.r))
	if err != nil {
		return err
	}
	q := rq.r.URL.Query()
	status := q.Get("status")
	statuses, ok := statusFilters[status]
	if !ok {
		status, statuses = "", nil
	}
	f := store.DeliveryFilter{WebhookID: h.ID, Statuses: statuses, Limit: pageSize}
	cursor := q.Get("cursor")
	if cursor != "" {
		if f.After = decodeCursor(cursor); f.After == nil {
			cursor = ""
		}
	}
	ds, bodies, err := c.api.Deliveries(ctx, rq.actor, f)
	if err != nil {
		return err
	}
	d := detailData{Hook: h, Warnings: c.api.Warnings(h.Webhook), Status: status, Cursor: cursor}
	for _, r := range ds {
		d.Deliveries = append(d.Deliveries, deliveryRow{DeliveryRecord: r, Body: bodies[r.EventID]})
	}
	if len(ds) == pageSize {
		d.Next = encodeCursor(ds[len(ds)-1])
	}
	now := c.o.Now().In(rq.company.Location)
	d.RefireFrom = now.Add(-24 * time.Hour).Format(localInput)
	d.RefireTo = now.Add(time.Minute).Format(localInput)
	for i, w := range d.Warnings {
		d.Warnings[i] = warningText(w)
	}
	if d.Replay, err = c.replayPanel(rq, h, replay); err != nil {
		return err
	}
	c.render(rq.w, code, "detail", c.page(rq, h.Name, "webhooks", d))
	return nil
}

func (c *Console) detailURL(id int64, status string) string {
	u := fmt.Sprintf("%swebhooks/%d", c.o.Prefix, id)
	if _, ok := statusFilters[status]; ok && status != "" {
		u += "?status=" + status
	}
	return u + "#deliveries"
}

func (c *Console) refire(rq *req) error {
	id := pathID(rq.r)
	did, err := uuid.Parse(rq.r.PathValue("delivery"))
	if err != nil {
		did = uuid.Nil // no delivery has it: not found
	}
	_, warnings, err := c.api.Refire(rq.r.Context(), rq.actor, id, did)
	if err != nil {
		p, ok := admin.Explain(err)
		if !ok || p.Status == http.StatusNotFound && p.Message == "no such webhook" {
			return err
		}
		c.addFlash(rq, "error", "Re-fire refused: "+p.Message)
	} else {
		c.addFlash(rq, "ok", "Delivery …"+shortID(did.String())+" re-fired: it is sent again now, with the same id.")
		for _, w := range warnings {
			c.addFlash(rq, "warn", w)
		}
	}
	c.redirect(rq, c.detailURL(id, rq.r.PostForm.Get("status")))
	return nil
}

func (c *Console) refireFailed(rq *req) error {
	id := pathID(rq.r)
	loc := rq.company.Location
	from, err1 := time.ParseInLocation(localInput, rq.r.PostForm.Get("from"), loc)
	to, err2 := time.ParseInLocation(localInput, rq.r.PostForm.Get("to"), loc)
	if err1 != nil || err2 != nil {
		if _, err := c.api.Webhook(rq.r.Context(), rq.actor, id); err != nil {
			return err
		}
		c.addFlash(rq, "error", "Re-fire all failed: give both From and To as a date and time.")
		c.redirect(rq, c.detailURL(id, ""))
		return nil
	}
	ids, warnings, err := c.api.RefireFailed(rq.r.Context(), rq.actor, id, from, to)
	if err != nil {
		p, ok := admin.Explain(err)
		if !ok || p.Status == http.StatusNotFound {
			return err
		}
		msg := p.Message
		if len(p.Fields) > 0 {
			msg = p.Fields[0].Field + ": " + p.Fields[0].Message
		}
		c.addFlash(rq, "error", "Re-fire all failed: "+msg)
	} else {
		c.addFlash(rq, "ok", fmt.Sprintf("%d failed deliveries created between %s and %s re-fired.",
			len(ids), when(loc, from), when(loc, to)))
		for _, w := range warnings {
			c.addFlash(rq, "warn", w)
		}
	}
	c.redirect(rq, c.detailURL(id, ""))
	return nil
}

// --- test event

type testData struct {
	Hook     store.WebhookStats
	Events   []string
	Selected string
	Result   *admin.TestResult
	Error    string
}

// FilterRefused reports whether the webhook's filter would not pass the
// test event (sent anyway: the admin asked for it), so that a real event
// like it would not be sent. False without a filter.
func (d testData) FilterRefused() bool {
	return d.Result != nil && d.Result.FilterPassed != nil && !*d.Result.FilterPassed
}

func (c *Console) testPage(rq *req) error {
	h, err := c.api.Webhook(rq.r.Context(), rq.actor, pathID(rq.r))
	if err != nil {
		return err
	}
	sel := ""
	if len(h.Events) > 0 {
		sel = h.Events[0]
	}
	c.render(rq.w, http.StatusOK, "test", c.page(rq, "Send test event · "+h.Name, "webhooks",
		testData{Hook: h, Events: c.api.Events(), Selected: sel}))
	return nil
}

func (c *Console) sendTest(rq *req) error {
	ctx := rq.r.Context()
	id := pathID(rq.r)
	h, err := c.api.Webhook(ctx, rq.actor, id)
	if err != nil {
		return err
	}
	d := testData{Hook: h, Events: c.api.Events(), Selected: rq.r.PostForm.Get("event_type")}
	res, err := c.api.SendTest(ctx, rq.actor, id, d.Selected)
	status := http.StatusOK
	if err != nil {
		p, ok := admin.Explain(err)
		if !ok || p.Status == http.StatusNotFound {
			return err
		}
		status, d.Error = http.StatusUnprocessableEntity, p.Message
	} else {
		d.Result = &res
	}
	c.render(rq.w, status, "test", c.page(rq, "Send test event · "+h.Name, "webhooks", d))
	return nil
}

// --- delete

func (c *Console) deletePage(rq *req) error {
	h, err := c.editable(rq)
	if err != nil {
		return err
	}
	c.render(rq.w, http.StatusOK, "delete", c.page(rq, "Delete "+h.Name, "webhooks", h))
	return nil
}

func (c *Console) delete(rq *req) error {
	ctx := rq.r.Context()
	id := pathID(rq.r)
	h, err := c.api.Webhook(ctx, rq.actor, id)
	if err != nil {
		return err
	}
	if rq.r.PostForm.Get("confirm") != h.Name {
		c.addFlash(rq, "error", "Not deleted: type the webhook's name exactly to confirm.")
		c.redirect(rq, fmt.Sprintf("%swebhooks/%d/delete", c.o.Prefix, id))
		return nil
	}
	if err := c.api.DeleteWebhook(ctx, rq.actor, id); err != nil {
		return err
	}
	c.addFlash(rq, "ok", "Webhook “"+h.Name+"” deleted. Its history stays in the audit log.")
	c.redirect(rq, c.o.Prefix+"webhooks")
	return nil
}

// --- audit log

type auditRow struct {
	store.AuditEntry
	Label       string
	WebhookName string
	Changes     []change
	Details     []change
}

type change struct {
	Field, Before, After string
}

type auditData struct {
	Hook    *store.WebhookStats
	Deleted bool
	ID      int64
	Name    string
	Rows    []auditRow
	Next    int64
}

var actionLabels = map[string]string{
	"webhook.create":        "Registered",
	"webhook.update":        "Changed",
	"webhook.rotate_secret": "Rotated the secret",
	"webhook.enable":        "Enabled",
	"webhook.disable":       "Disabled",
	"webhook.delete":        "Deleted",
	"webhook.test":          "Sent a test event",
	"delivery.refire":       "Re-fired a delivery",
	"delivery.refire_bulk":  "Re-fired failed deliveries",
	"webhook.replay":        "Replayed a time range",
	"webhook.replay_cancel": "Cancelled a replay",
}

func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "—"
	case string:
		return x
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		parts := make([]string, len(x))
		for i, v := range x {
			parts[i] = show(v)
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ": " + show(x[k])
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, "; ")
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func auditRows(entries []store.AuditEntry) []auditRow {
	out := make([]auditRow, 0, len(entries))
	for _, e := range entries {
		row := auditRow{AuditEntry: e, Label: actionLabels[e.Action]}
		if row.Label == "" {
			row.Label = e.Action
		}
		for _, m := range []map[string]any{e.After, e.Before} {
			if n, ok := m["name"].(string); ok && row.WebhookName == "" {
				row.WebhookName = n
			}
		}
		keys := map[string]bool{}
		for k := range e.Before {
			keys[k] = true
		}
		for k := range e.After {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			if k != "id" && k != "company_id" && k != "managed_by" {
				sorted = append(sorted, k)
			}
		}
		sort.Strings(sorted)
		if e.Action == "webhook.delete" {
			sorted = nil // the webhook is gone; its name is the row's
		}
		for _, k := range sorted {
			b, a := e.Before[k], e.After[k]
			switch {
			case e.Before == nil:
				row.Changes = append(row.Changes, change{Field: k, Before: "", After: show(a)})
			case e.After == nil:
				row.Changes = append(row.Changes, change{Field: k, Before: show(b), After: ""})
			case show(a) != show(b):
				row.Changes = append(row.Changes, change{Field: k, Before: show(b), After: show(a)})
			}
		}
		dk := make([]string, 0, len(e.Details))
		for k := range e.Details {
			dk = append(dk, k)
		}
		sort.Strings(dk)
		for _, k := range dk {
			if v := e.Details[k]; v == false || v == "" || v == nil {
				continue
			}
			row.Details = append(row.Details, change{Field: k, After: show(e.Details[k])})
		}
		out = append(out, row)
	}
	return out
}

func (c *Console) webhookAudit(rq *req) error {
	ctx := rq.r.Context()
	id := pathID(rq.r)
	entries, err := c.api.AuditLog(ctx, rq.actor, id, 200)
	if err != nil {
		return err
	}
	d := auditData{ID: id, Rows: auditRows(entries)}
	if h, err := c.api.Webhook(ctx, rq.actor, id); err == nil {
		d.Hook, d.Name = &h, h.Name
	} else if errors.Is(err, store.ErrNotFound) {
		d.Deleted = true
		for _, r := range d.Rows {
			if r.WebhookName != "" {
				d.Name = r.WebhookName
				break
			}
		}
	} else {
		return err
	}
	c.render(rq.w, http.StatusOK, "audit", c.page(rq, "Audit log · "+d.Name, "audit", d))
	return nil
}

const auditPage = 50

func (c *Console) companyAudit(rq *req) error {
	before, _ := strconv.ParseInt(rq.r.URL.Query().Get("before"), 10, 64)
	entries, err := c.api.CompanyAuditLog(rq.r.Context(), rq.actor, max(before, 0), auditPage)
	if err != nil {
		return err
	}
	d := auditData{Rows: auditRows(entries)}
	// Entries without the webhook's settings (test events, re-fires) are
	// named from the others or from the list.
	names := map[int64]string{}
	if hooks, err := c.api.ListWebhooks(rq.r.Context(), rq.actor); err == nil {
		for _, h := range hooks {
			names[h.ID] = h.Name
		}
	}
	for _, r := range d.Rows {
		if r.WebhookName != "" && names[r.WebhookID] == "" {
			names[r.WebhookID] = r.WebhookName
		}
	}
	for i := range d.Rows {
		if d.Rows[i].WebhookName == "" {
			d.Rows[i].WebhookName = names[d.Rows[i].WebhookID]
		}
	}
	if len(entries) == auditPage {
		d.Next = entries[len(entries)-1].ID
	}
	c.render(rq.w, http.StatusOK, "audit", c.page(rq, "Audit log", "audit", d))
	return nil
}

// overlapChoice is one window the Webhooks page offers for a new secret.
type overlapChoice struct{ Value, Label string }

// overlapChoices are the windows the page offers, 24 hours (the API's
// default) preselected.
var overlapChoices = []overlapChoice{
	{"0", "no time: replace it at once"}, {"1h", "1 hour"}, {"24h", "24 hours"}, {"72h", "3 days"}, {"168h", "7 days"},
}
