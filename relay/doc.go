// Package relay delivers webhook events: it signs and POSTs each event's
// body to its webhook, classifies the response, and records the attempt
// with the delivery's next step: delivered, retried later under the retry
// schedule, or failed for good.
//
// A delivery reaches the dispatcher by one of three roads, most first
// attempts by the first: taken ahead of its store write, offered by the
// ingester as soon as its source transaction is read (Ahead, ahead.go);
// handed off by the store write that created it (Reserve, Committed,
// handoff.go); or claimed from the store when it is due, a retry or one
// no dispatcher took (claims.go). Each then waits for a slot
// (dispatcher.go, slots.go: attempt), and its attempt is sent and
// recorded (record.go: attemptOne and the attempt's row; send.go: the
// request, written by the h1 package or net/http).
//
// Everything that must survive a restart is in the store: the attempt count,
// the next attempt's due time and every attempt. A delivery is held by one
// dispatcher at a time under a lease, so several relays may share one state
// database; an attempt is recorded only by the dispatcher that holds the
// lease, and a lease left by a dead dispatcher expires and the delivery is
// sent again. Delivery is therefore at least once: receivers drop duplicates
// by the X-SMTM-Delivery header, which is the same for every attempt.
//
// A webhook never gets more than its share of concurrent attempts, so a slow
// or hanging endpoint delays only its own deliveries. A dispatcher takes a
// bounded number of a busy webhook's deliveries beyond its free slots, so
// the next attempt starts as soon as a slot frees; a claimed delivery that
// waited so long that its lease could end mid-attempt is given back unsent.
//
// # Glossary
//
// Each word below names one thing throughout the package.
//
//   - lease: a delivery's lease_owner and lease_until in the store; while it
//     lasts, only its owner sends the delivery. A dispatcher gets leases in
//     two ways: by a claim, or from the store write that created the
//     deliveries (the hand-off, and the deliveries it took ahead).
//   - claim: a store query that leases due deliveries with their payloads
//     (store.Claim), made by a claim round (claims.go).
//   - hand-off: the ingester's store write leases new deliveries to the
//     dispatcher as it stores them, within what Reserve allowed, and gives
//     them over (Handoff) once its transaction commits (handoff.go).
//   - ahead: a delivery the ingester offers before any of it is stored,
//     decided from its copy of the webhooks (Ahead); taken, its attempt
//     starts at once, and its result waits in memory until the store
//     write, or the part of a large transaction, has stored it (Stored,
//     PartStored), or goes with that write (Finished) (ahead.go).
//   - ready: a delivery leased with its payload, by a claim or a hand-off,
//     that can be sent as soon as a slot is free.
//   - held: a delivery leased by a hand-off as an id only, beyond its
//     webhook's window; its payload is read (store.LoadHeld) once the window
//     has room for it.
//   - slot: one attempt's place in the Workers limit and in its webhook's
//     PerWebhook limit (slots.go). An attempt holds one of each.
//   - in flight: a delivery whose attempt is running in a slot.
//   - queued: a ready delivery waiting in memory for a slot of its webhook.
//   - taken: in flight and queued together, what the dispatcher has taken
//     by any road and not finished (minTaken, takenBytes).
//   - window: how many deliveries one webhook may have taken, from prefetch
//     per slot down to two per slot for a slow webhook (windowLocked); the
//     hold window adds what it may have held (holdWindowLocked).
//   - prefetch: how many deliveries per slot a webhook's window holds at most.
//   - room: how many more deliveries may be taken: for the dispatcher as a
//     whole (roomLocked), or for one webhook, its window less what it has
//     taken.
//   - held back: the change feed while Ahead waits for a worker the relay
//     is short of, rather than queue or refuse a delivery (waitRoomLocked;
//     the hold* constants bound it). Not to be confused with held
//     deliveries.
//   - behind: a webhook a claim round left out because its window was full;
//     the slot that drains it asks for a round.
//   - starved: a claim round stopped for want of room; the next freed slot
//     asks for a round.
//   - give back: release a lease without an attempt (store.ReleaseClaims),
//     so that any sender may claim the delivery at once; stale deliveries,
//     those that waited so long that an attempt could outlast the lease, are
//     given back.
//   - wake: what starts a claim round besides the poll timer: a notice
//     (Notify: new deliveries in the store), a freed slot that asks for a
//     round, or a recorded retry falling due.
//
// Every method that must be called with Dispatcher.mu held ends in Locked,
// and no other does.
package relay
