package store

import (
	"context"
	"sync"
	"testing"
)

// TestConcurrentFileSyncs: relays started together all sync the same config
// file; none may fail on the unique (company, name) key, and each webhook
// exists once.
func TestConcurrentFileSyncs(t *testing.T) {
	s := newTestStore(t)
	hooks := []Webhook{
		{CompanyID: 1, Name: "a", URL: "https://a.example/h", Events: []string{"task.completed"}, Active: true},
		{CompanyID: 1, Name: "b", URL: "https://b.example/h", Events: []string{"task.assigned"}, Active: true},
	}
	for round := 0; round < 5; round++ {
		s.mustExec(t, "DELETE FROM {{schema}}.webhooks")
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, _, err := s.SyncFileWebhooks(context.Background(), hooks)
				errs <- err
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		var n int
		if err := s.pool.QueryRow(context.Background(), s.q("SELECT count(*) FROM {{schema}}.webhooks WHERE deleted_at IS NULL")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(hooks) {
			t.Fatalf("round %d: %d webhooks, want %d", round, n, len(hooks))
		}
	}
}
