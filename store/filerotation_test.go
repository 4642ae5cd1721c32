package store

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

// rotations returns the audit entries of webhook id that record a changed
// secret, oldest first.
func (s *Store) rotations(t *testing.T, id int64) []AuditEntry {
	t.Helper()
	entries, err := s.AuditLog(context.Background(), AllCompanies, id, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []AuditEntry
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Details["secret_changed"] == true {
			out = append(out, entries[i])
		}
	}
	return out
}

// syncOne syncs hook as the file's only webhook and returns how many
// webhooks the sync updated.
func (s *Store) syncOne(t *testing.T, hook Webhook) int {
	t.Helper()
	_, updated, _, err := s.SyncFileWebhooks(context.Background(), []Webhook{hook})
	if err != nil {
		t.Fatal(err)
	}
	return updated
}

// TestFileSecretRotation: a secret changed in the config file is a
// rotation like one through the API: the replaced secret, sealed, keeps
// signing for the webhook's secret_overlap, and the audit log records it
// with the window and no secret. A sync of the same file, an edit of
// another field and a reseal under a new key leave the window alone; a
// second change within the window keeps only the secret it replaces; an
// overlap of 0 and a removed secret keep none.
func TestFileSecretRotation(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.UseSecrets(box(t, 1))
	const a, b, c, d, e = "file-secret-a-0123456789", "file-secret-b-0123456789", "file-secret-c-0123456789",
		"file-secret-d-0123456789", "file-secret-e-0123456789"
	hook := Webhook{CompanyID: 1, Name: "erp", URL: "http://erp", Events: []string{"task.completed"},
		Secret: a, Active: true, SecretOverlap: time.Hour}
	if _, _, _, err := s.SyncFileWebhooks(ctx, []Webhook{hook}); err != nil {
		t.Fatal(err)
	}
	hooks, err := s.Webhooks(ctx)
	if err != nil || len(hooks) != 1 {
		t.Fatalf("webhooks: %+v %v", hooks, err)
	}
	id := hooks[0].ID
	if cl := s.claimOne(t, id); cl.Secret != a || cl.PreviousSecret != "" {
		t.Fatalf("added: claim secret=%q previous=%q", cl.Secret, cl.PreviousSecret)
	}
	if raw, until := s.rawPrevious(t, id); raw != nil || until != nil || len(s.rotations(t, id)) != 0 {
		t.Fatalf("a new file webhook has a previous secret %v until %v", raw, until)
	}

	// The file's secret changes: a rotation with the file's window.
	start := time.Now()
	hook.Secret = b
	if n := s.syncOne(t, hook); n != 1 {
		t.Fatalf("sync of a new secret updated %d", n)
	}
	if cl := s.claimOne(t, id); cl.Secret != b || cl.PreviousSecret != a {
		t.Fatalf("in the window: claim secret=%q previous=%q", cl.Secret, cl.PreviousSecret)
	}
	read, err := s.WebhookByID(ctx, AllCompanies, id)
	if err != nil || read.PreviousSecret != a || read.PreviousSecretUntil.Before(start.Add(59*time.Minute)) ||
		read.PreviousSecretUntil.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("read back: previous %q until %v (%v)", read.PreviousSecret, read.PreviousSecretUntil, err)
	}
	raw, until := s.rawPrevious(t, id)
	if raw == nil || !strings.HasPrefix(*raw, keyPrefix(1)) {
		t.Fatalf("previous secret stored as %v, want sealed with key 1", raw)
	}
	rot := s.rotations(t, id)
	if len(rot) != 1 || rot[0].Action != "webhook.rotate_secret" || rot[0].Actor != FileActor {
		t.Fatalf("audit after the change: %+v", rot)
	}
	details, _ := json.Marshal(rot[0].Details)
	if !strings.Contains(string(details), `"secret_overlap":"1h0m0s"`) || !strings.Contains(string(details), `"previous_secret_until"`) {
		t.Errorf("rotation audit details %s lack the window", details)
	}
	if rot[0].After["previous_secret_until"] == nil || rot[0].Before["has_secret"] != true {
		t.Errorf("rotation audit before %v after %v", rot[0].Before, rot[0].After)
	}

	// The same file again, another field edited, a new key: the window
	// stays as it is, and none of them is a rotation.
	if n := s.syncOne(t, hook); n != 0 {
		t.Fatalf("a sync of the same file updated %d", n)
	}
	hook.Description = "edited"
	hook.URL = "http://erp/v2"
	if n := s.syncOne(t, hook); n != 1 {
		t.Fatalf("a sync of an edited description updated %d", n)
	}
	s.UseSecrets(box(t, 2, 1))
	if n := s.syncOne(t, hook); n != 1 {
		t.Fatalf("a sync under a new key updated %d, want 1 (reseal)", n)
	}
	if raw2, until2 := s.rawPrevious(t, id); raw2 == nil || *raw2 != *raw || until2 == nil || *until2 != *until {
		t.Fatalf("an edit of other fields changed the previous secret: %v until %v, was %v until %v", raw2, until2, *raw, *until)
	}
	if cl := s.claimOne(t, id); cl.Secret != b || cl.PreviousSecret != a || cl.SecretError != "" {
		t.Fatalf("after other edits: claim secret=%q previous=%q err=%q", cl.Secret, cl.PreviousSecret, cl.SecretError)
	}
	if n := len(s.rotations(t, id)); n != 1 {
		t.Fatalf("%d rotations recorded after edits of other fields, want 1", n)
	}

	// Changed again within the window: only the secret it replaces is kept.
	hook.Secret = c
	s.syncOne(t, hook)
	if cl := s.claimOne(t, id); cl.Secret != c || cl.PreviousSecret != b {
		t.Fatalf("second rotation: claim secret=%q previous=%q", cl.Secret, cl.PreviousSecret)
	}
	if raw, _ := s.rawPrevious(t, id); raw == nil || !strings.HasPrefix(*raw, keyPrefix(2)) {
		t.Fatalf("previous secret of the second rotation stored as %v, want sealed with key 2", raw)
	}

	// secret_overlap 0: the replaced secret stops at once, and so does the
	// one kept from before.
	hook.Secret, hook.SecretOverlap = d, 0
	s.syncOne(t, hook)
	if raw, until := s.rawPrevious(t, id); raw != nil || until != nil {
		t.Fatalf("rotation with secret_overlap 0 kept %v until %v", raw, until)
	}
	if cl := s.claimOne(t, id); cl.Secret != d || cl.PreviousSecret != "" {
		t.Fatalf("no overlap: claim secret=%q previous=%q", cl.Secret, cl.PreviousSecret)
	}

	// Removing the secret keeps nothing: there is no new secret to switch
	// to, and requests go unsigned.
	hook.Secret, hook.SecretOverlap = e, time.Hour
	s.syncOne(t, hook)
	hook.Secret = ""
	s.syncOne(t, hook)
	if raw, until := s.rawPrevious(t, id); raw != nil || until != nil {
		t.Fatalf("removing the secret kept %v until %v", raw, until)
	}
	if cl := s.claimOne(t, id); cl.Secret != "" || cl.PreviousSecret != "" {
		t.Fatalf("no secret: claim secret=%q previous=%q", cl.Secret, cl.PreviousSecret)
	}
	rot = s.rotations(t, id)
	if len(rot) != 5 {
		t.Fatalf("%d secret changes recorded, want 5: %+v", len(rot), rot)
	}
	last := rot[len(rot)-1]
	if last.Action != "webhook.update" || last.Details["secret_overlap"] != "0s" || last.After["has_secret"] != false {
		t.Errorf("audit of the removed secret: %s %v %v", last.Action, last.Details, last.After)
	}
	s.assertNotInClear(t, a, b, c, d, e)
}

// TestFileSecretRotationConcurrentSyncs: relays started together sync the
// same edited file at once; the secret rotates once, the previous secret
// is the one the file replaced, and one rotation is recorded.
func TestFileSecretRotationConcurrentSyncs(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	const old, next = "file-secret-old-0123456789", "file-secret-new-0123456789"
	hook := Webhook{CompanyID: 1, Name: "erp", URL: "http://erp", Events: []string{"task.completed"},
		Secret: old, Active: true, SecretOverlap: time.Hour}
	s.syncOne(t, hook)
	hook.Secret = next
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _, err := s.SyncFileWebhooks(ctx, []Webhook{hook})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	hooks, err := s.Webhooks(ctx)
	if err != nil || len(hooks) != 1 {
		t.Fatalf("webhooks: %+v %v", hooks, err)
	}
	if cl := s.claimOne(t, hooks[0].ID); cl.Secret != next || cl.PreviousSecret != old {
		t.Fatalf("claim secret=%q previous=%q", cl.Secret, cl.PreviousSecret)
	}
	if rot := s.rotations(t, hooks[0].ID); len(rot) != 1 {
		t.Fatalf("%d rotations recorded, want 1: %+v", len(rot), rot)
	}
}
