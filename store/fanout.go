package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/smartmaintenance/relay/event"
)

// DeliveryID is the id the store gives the delivery to webhook of the
// event at (commitLSN, seq) of slot's feed, committed at committedAt: the
// same as the SQL function delivery_id (migration 0012), so a delivery
// sent before it is stored carries the id it is stored under. key is the
// installation's key (DeliveryKey).
//
// The id is laid out as a UUID version 8: the first 16 bytes of the
// SHA-256 of key, commitLSN (8 bytes), seq (4 bytes), webhook (8 bytes),
// all big-endian, and slot, with the Unix milliseconds of committedAt
// (rounded down; the low 48 bits) over its first 6 bytes, then the version
// and variant bits.
func DeliveryID(key []byte, slot string, commitLSN event.LSN, seq int, webhook int64, committedAt time.Time) uuid.UUID {
	var buf [128]byte // on the stack for any key and slot name of usual size
	b := append(buf[:0], key...)
	b = binary.BigEndian.AppendUint64(b, uint64(commitLSN))
	b = binary.BigEndian.AppendUint32(b, uint32(int32(seq)))
	b = binary.BigEndian.AppendUint64(b, uint64(webhook))
	b = append(b, slot...)
	h := sha256.Sum256(b)
	var id uuid.UUID
	copy(id[:], h[:16])
	// UnixMilli rounds down, before the epoch too, as floor() does in SQL
	// (the database keeps microseconds, rounded down as well).
	ms := uint64(committedAt.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	id[6] = h[6]&0x0f | 0x80 // version 8
	id[8] = h[8]&0x3f | 0x80 // variant 10 (RFC 9562)
	return id
}

// DeliveryKey returns the installation's key for delivery ids (migration
// 0012), as DeliveryID takes it. It is read once per store; each call
// returns a copy of its own.
func (s *Store) DeliveryKey(ctx context.Context) ([]byte, error) {
	k, err := s.deliveryKey(ctx)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(k), nil
}

// FanOutWebhook is one active, undeleted webhook as the fan-out decides
// with it.
type FanOutWebhook struct {
	ID, CompanyID int64
	// Events are the event types it subscribes to.
	Events    []string
	CreatedAt time.Time
	// Filtered: it has a filter (see Filtering), which decides whether it
	// takes an event of its events.
	Filtered bool
	// PausedUntil is when its receiver asked to be left alone until
	// (Retry-After), when that was later than the load; zero otherwise.
	PausedUntil time.Time
}

// FanOut is the active, undeleted webhooks as of one snapshot of the
// store, with the version of the webhooks (migration 0022) in that
// snapshot: a write of deliveries decided with it can check that no
// webhook or pause changed since (WebhooksVersion).
type FanOut struct {
	// Version is the webhooks' version the snapshot saw.
	Version int64
	// ByCompany holds each company's webhooks, ordered by id.
	ByCompany map[int64][]FanOutWebhook
	// endpoints holds what sending to each webhook needs, for Fill.
	endpoints map[int64]*endpoint
}

// loadFanOutSQL reads the version and every active, undeleted webhook,
// with its pause if it lasts beyond now and its endpoint columns as claims
// read them (claimSQL), in one statement, so that all of it is of one
// snapshot. The version's row is always there: with no webhook the one
// row has a NULL id.
const loadFanOutSQL = `
SELECT v.version, w.id, w.company_id, w.events, w.created_at, w.filter IS NOT NULL, p.until,
       w.url, w.secret, w.headers, w.format, w.standard_webhooks, ` + claimPreviousSecret + `
FROM {{schema}}.webhooks_version v
LEFT JOIN {{schema}}.webhooks w ON w.active AND w.deleted_at IS NULL
LEFT JOIN {{schema}}.webhook_pauses p ON p.webhook_id = w.id AND p.until > now()
ORDER BY w.id`

// LoadFanOut reads every active, undeleted webhook with its pause and
// what sending to it needs, and the webhooks' version, in one statement:
// all as of one snapshot.
func (s *Store) LoadFanOut(ctx context.Context) (*FanOut, error) {
	rows, err := s.pool.Query(ctx, s.q(loadFanOutSQL))
	if err != nil {
		return nil, fmt.Errorf("read webhooks for fan-out: %w", err)
	}
	defer rows.Close()
	f := &FanOut{ByCompany: map[int64][]FanOutWebhook{}, endpoints: map[int64]*endpoint{}}
	var (
		// NULL in the one row there is when there is no webhook.
		id, company                               pgtype.Int8
		events                                    []string
		created, until, previousUntil             pgtype.Timestamptz
		filtered                                  bool
		standard                                  pgtype.Bool
		url, secret, headers, format, previousSec pgtype.DriverBytes
	)
	for rows.Next() {
		id, until, previousUntil = pgtype.Int8{}, pgtype.Timestamptz{}, pgtype.Timestamptz{}
		if err := rows.Scan(&f.Version, &id, &company, &events, &created, &filtered, &until,
			&url, &secret, &headers, &format, &standard, &previousSec, &previousUntil); err != nil {
			return nil, fmt.Errorf("read webhooks for fan-out: %w", err)
		}
		if !id.Valid { // no webhook: the version alone
			continue
		}
		h := FanOutWebhook{ID: id.Int64, CompanyID: company.Int64, Events: events, CreatedAt: created.Time, Filtered: filtered}
		if until.Valid {
			h.PausedUntil = until.Time
		}
		events = nil // the next row scans into a slice of its own
		f.ByCompany[h.CompanyID] = append(f.ByCompany[h.CompanyID], h)
		f.endpoints[h.ID] = s.endpointOf(h.ID, url, secret, headers, format, signing{previous: previousSec, until: previousUntil.Time, standard: standard.Bool})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read webhooks for fan-out: %w", err)
	}
	return f, nil
}

// Fill sets c's webhook fields (URL, Secret or SecretError, Headers,
// Format, PreviousSecret, StandardWebhooks) for webhook, as a claim of one
// of its deliveries would. It returns false, leaving c alone, when webhook
// is not in f.
func (f *FanOut) Fill(webhook int64, c *Claimed) bool {
	e, ok := f.endpoints[webhook]
	if !ok {
		return false
	}
	e.fill(c)
	return true
}

// WebhooksVersion returns the webhooks' current version (migration 0022):
// it moves on every change to a webhook or a pause.
func (s *Store) WebhooksVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, s.q(`SELECT version FROM {{schema}}.webhooks_version`)).Scan(&v); err != nil {
		return 0, fmt.Errorf("read the webhooks' version: %w", err)
	}
	return v, nil
}

// WebhooksMessagePrefix is the prefix of the logical decoding message that
// every change to the webhooks or their pauses emits in its transaction
// (migration 0022), when the server's wal_level is logical: a relay that
// streams the database its state is in reads it in the change feed, in
// the change's place among the platform's transactions.
const WebhooksMessagePrefix = "smtm_relay_webhooks"

// AnnounceInFeed emits a logical decoding message with
// WebhooksMessagePrefix and content in the state database, as a change to
// the webhooks does (when wal_level is logical; else it does nothing). A
// relay that sees it come back in its change feed knows that the feed
// carries the webhooks' changes.
func (s *Store) AnnounceInFeed(ctx context.Context, content string) error {
	_, err := s.pool.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, $2) WHERE current_setting('wal_level') = 'logical'`,
		WebhooksMessagePrefix, content)
	if err != nil {
		return fmt.Errorf("announce in the change feed: %w", err)
	}
	return nil
}
