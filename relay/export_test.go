package relay

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/store"
)

// countingStore is the real store, counting the claim queries (claims),
// those that looked before held deliveries (looks) and the reads of held
// deliveries (loads) that a dispatcher makes.
type countingStore struct {
	deliveryStore
	claims, loads, looks atomic.Int64
}

func (c *countingStore) Claim(ctx context.Context, req store.ClaimRequest) ([]store.Claimed, error) {
	c.claims.Add(1)
	if req.Before != nil {
		c.looks.Add(1)
	}
	return c.deliveryStore.Claim(ctx, req)
}

func (c *countingStore) LoadHeld(ctx context.Context, owner string, ids []uuid.UUID, minLease time.Duration) ([]store.Claimed, error) {
	c.loads.Add(1)
	return c.deliveryStore.LoadHeld(ctx, owner, ids, minLease)
}

// counts returns the counts of the store calls d made; d must have been
// started by env.start.
func counts(d *Dispatcher) *countingStore { return d.st.(*countingStore) }

// HoldOff is until when Ahead waits for room for no webhook (see
// Dispatcher.waitRoomLocked); zero if no wait gave up.
func (d *Dispatcher) HoldOff() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.holdOff
}

// QueuedFor is how many deliveries of webhook wait in its queue.
func (d *Dispatcher) QueuedFor(webhook int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queue[webhook])
}
