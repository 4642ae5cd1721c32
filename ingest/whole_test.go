package ingest_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/ingest"
	"github.com/smartmaintenance/relay/store"
)

// wholeSeen is the store, noting the Batch.WholeAt of every write in
// flight, a group's (WriteCommit) or a part's (WritePart).
type wholeSeen struct {
	*store.Store
	mu   sync.Mutex
	seen []int64
}

func (s *wholeSeen) WriteCommit(ctx context.Context, slot string, b store.Batch, from, end event.LSN) (int64, store.Leased, error) {
	s.note(b.WholeAt)
	return s.Store.WriteCommit(ctx, slot, b, from, end)
}

func (s *wholeSeen) WritePart(ctx context.Context, slot string, lsn event.LSN, p store.Part, b store.Batch) (int64, store.Leased, error) {
	s.note(b.WholeAt)
	return s.Store.WritePart(ctx, slot, lsn, p, b)
}

func (s *wholeSeen) note(v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, v)
}

// TestWholeGroupsAreWrittenAsSuch: a group whose every delivery went
// ahead, decided with one version of the webhooks and none let go, is
// written saying so (store.Batch.WholeAt, the version), and so is each
// part of a large transaction whose deliveries all went ahead; a group
// with a delivery let go, or decided with two versions of the webhooks,
// is not, and its write decides the fan-out from the webhooks' rows.
func TestWholeGroupsAreWrittenAsSuch(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		h    ingest.Handoff
		// between runs between the group's two transactions.
		between func(t *testing.T, f *fixture)
		whole   bool
	}{
		{"all ahead", takeAll{stored: make(chan event.LSN, 10)}, nil, true},
		{"let go", keepNone{takeAll{stored: make(chan event.LSN, 10)}}, nil, false},
		{"webhooks changed", takeAll{stored: make(chan event.LSN, 10)}, func(t *testing.T, f *fixture) {
			if _, err := f.st.Pool().Exec(ctx, `UPDATE relay.webhooks SET url = url || '?v=2'`); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 2, 100)
			st := &wholeSeen{Store: f.st}
			f.in.Close(ctx)
			f.in = ingest.New(st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 100, Handoff: tc.h})
			f.start()
			f.tx(set{1, false})
			if tc.between != nil {
				tc.between(t, f)
			}
			f.tx(set{2, false})
			f.flush()
			if err := f.in.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			v, err := f.st.WebhooksVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []int64{0}
			if tc.whole {
				want = []int64{v}
			}
			if !slices.Equal(st.seen, want) {
				t.Fatalf("writes said whole at %v, want %v", st.seen, want)
			}
			if got := f.deactivations(); got != 2 {
				t.Fatalf("%d user.deactivated stored, want 2", got)
			}
		})
	}

	for _, tc := range []struct {
		name  string
		h     ingest.Handoff
		whole bool
	}{
		{"parts", takeAll{stored: make(chan event.LSN, 10)}, true},
		{"parts, half taken ahead", &takeHalf{takeAll: takeAll{stored: make(chan event.LSN, 10)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 250, 100)
			st := &wholeSeen{Store: f.st}
			f.in.Close(ctx)
			f.in = ingest.New(st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 100, Handoff: tc.h})
			f.start()
			f.deactivateAll(250)
			if err := f.in.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			v, err := f.st.WebhooksVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Two parts of 100 changes in flight; the rest is written
			// with the commit, in the store transaction the row state is
			// in.
			want := []int64{0, 0}
			if tc.whole {
				want = []int64{v, v}
			}
			if !slices.Equal(st.seen, want) {
				t.Fatalf("writes said whole at %v, want %v", st.seen, want)
			}
			var events, deliveries int
			if err := f.st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM relay.events WHERE event_type = 'user.deactivated'),
				(SELECT count(*) FROM relay.deliveries)`).Scan(&events, &deliveries); err != nil {
				t.Fatal(err)
			}
			if events != 250 || deliveries != 250 {
				t.Fatalf("%d user.deactivated stored with %d deliveries, want 250 and 250", events, deliveries)
			}
		})
	}
}

// takeHalf is a sender that takes every other delivery ahead of its store
// write.
type takeHalf struct {
	takeAll
	n atomic.Int64
}

func (h *takeHalf) Ahead(*store.Claimed, event.LSN, bool) bool { return h.n.Add(1)%2 == 0 }
