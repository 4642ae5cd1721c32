// Package relay delivers webhook events: it claims due deliveries from the
// store, signs and POSTs each event's body to its webhook, classifies the
// response, and records the attempt with the delivery's next step: delivered,
// retried later under the retry schedule, or failed for good.
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
// or hanging endpoint delays only its own deliveries. A dispatcher claims a
// bounded number of a busy webhook's deliveries ahead of its free slots, so
// the next attempt starts as soon as a slot frees; a claimed delivery that
// waited so long that its lease could end mid-attempt is given back unsent.
package relay
