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

// wholeFixture returns a fixture of users users, read in chunks of 100,
// whose ingester hands deliveries to h and writes through a wholeSeen.
func wholeFixture(t *testing.T, users int, h ingest.Handoff) (*fixture, *wholeSeen) {
	f := newFixture(t, users, 100)
	st := &wholeSeen{Store: f.st}
	f.in.Close(context.Background())
	f.in = ingest.New(st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 100, Handoff: h})
	f.start()
	return f, st
}

// want waits for f's writes in flight (Sync) and fails unless there were
// n of them, each saying it was whole at the webhooks' current version,
// or each saying it was not.
func (s *wholeSeen) want(t *testing.T, f *fixture, n int, whole bool) {
	t.Helper()
	ctx := context.Background()
	if err := f.in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := s.WebhooksVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int64, n)
	if whole {
		for i := range want {
			want[i] = v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Equal(s.seen, want) {
		t.Fatalf("writes said whole at %v, want %v", s.seen, want)
	}
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
			f, st := wholeFixture(t, 2, tc.h)
			f.tx(set{1, false})
			if tc.between != nil {
				tc.between(t, f)
			}
			f.tx(set{2, false})
			f.flush()
			st.want(t, f, 1, tc.whole)
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
			f, st := wholeFixture(t, 250, tc.h)
			f.deactivateAll(250)
			// Two parts of 100 changes in flight; the rest is written
			// with the commit, in the store transaction the row state is
			// in.
			st.want(t, f, 2, tc.whole)
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
