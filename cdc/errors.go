package cdc

import (
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors a caller can act on. Each wraps into a one-line message that says
// how to fix the problem.
var (
	ErrWalLevel        = errors.New("wal_level is not logical")
	ErrNoReplication   = errors.New("role lacks the REPLICATION attribute")
	ErrSlotMissing     = errors.New("replication slot is missing")
	ErrSlotInvalidated = errors.New("replication slot was invalidated")
	ErrSlotForeign     = errors.New("replication slot exists but the relay has no record of it")
	ErrSlotBusy        = errors.New("replication slot is in use by another process")
	ErrPositionBehind  = errors.New("replication slot was confirmed past the relay's position")
)

// IsFatal reports whether err is a problem that waiting and reconnecting
// cannot fix.
func IsFatal(err error) bool {
	for _, target := range []error{ErrWalLevel, ErrNoReplication, ErrSlotMissing, ErrSlotInvalidated, ErrSlotForeign, ErrPositionBehind} {
		if errors.Is(err, target) {
			return true
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000", // bad password, no such role / not allowed
			"3D000", // database does not exist
			"42501", // insufficient privilege
			"42704", // undefined object (slot, publication)
			"42P01": // undefined table
			return true
		case "55000": // object not in prerequisite state: wal_level, invalidated slot
			return true
		}
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

// classifyStart maps START_REPLICATION failures onto the errors callers act on.
func classifyStart(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55006": // object in use
			return fmt.Errorf("%w: %v", ErrSlotBusy, err)
		case "55000":
			return fmt.Errorf("%w: %v", ErrSlotInvalidated, err)
		}
	}
	return err
}
