package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"

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
	b := make([]byte, 0, len(key)+20+len(slot))
	b = append(b, key...)
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

// WebhooksVersion returns the webhooks' current version (migration 0022):
// it moves on every change to a webhook or a pause.
func (s *Store) WebhooksVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, s.q(`SELECT version FROM {{schema}}.webhooks_version`)).Scan(&v); err != nil {
		return 0, fmt.Errorf("read the webhooks' version: %w", err)
	}
	return v, nil
}
