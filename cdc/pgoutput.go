package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/smartmaintenance/relay/event"
)

// parse decodes a pgoutput message other than Begin and Commit (see
// parseBegin): a row change into a rowMessage, any other into
// pglogrepl's message, turning a panic of its decoder on a
// malformed message into an error. Counts and lengths are checked against
// the message's size first: the decoder allocates what they declare, so a
// corrupt length would otherwise ask for gigabytes.
func parse(data []byte) (m any, err error) {
	if len(data) == 0 {
		return nil, errors.New("empty message")
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete:
		m, err := parseRow(data)
		if err != nil {
			return nil, fmt.Errorf("malformed %q message (%d bytes): %w", data[0], len(data), err)
		}
		return m, nil
	case pglogrepl.MessageTypeTruncate:
		if len(data) < 6 {
			return nil, fmt.Errorf("malformed %q message (%d bytes): too short", data[0], len(data))
		}
		if n := uint64(binary.BigEndian.Uint32(data[1:])); 5+4*n > uint64(len(data)-1) {
			return nil, fmt.Errorf("malformed %q message (%d bytes): declares %d relations", data[0], len(data), n)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed message (%d bytes): %v", len(data), r)
		}
	}()
	return pglogrepl.Parse(data)
}

// beginMessage is what the feed reads from a Begin ('B') message.
type beginMessage struct {
	finalLSN   event.LSN
	commitTime time.Time
	xid        uint32
}

// parseBegin reads a Begin message: Byte1('B'), Int64 the transaction's
// final LSN, Int64 its commit time, Int32 its xid. Begin and Commit come
// with every source transaction and are read in place, as row changes
// are: pglogrepl's parser allocates a decoder and a message for each.
// Like that parser, it ignores bytes past the fields
// (FuzzBeginCommitAgreeWithPglogrepl).
func parseBegin(data []byte) (beginMessage, error) {
	if len(data) < 21 || data[0] != 'B' {
		return beginMessage{}, fmt.Errorf("malformed Begin message (%d bytes)", len(data))
	}
	return beginMessage{
		finalLSN:   event.LSN(binary.BigEndian.Uint64(data[1:])),
		commitTime: pgTime(data[9:]),
		xid:        binary.BigEndian.Uint32(data[17:]),
	}, nil
}

// parseCommit reads the transaction's end LSN from a Commit message:
// Byte1('C'), Int8 flags (unused), Int64 the commit's LSN, Int64 the
// transaction's end LSN, Int64 its commit time (the feed has the last
// two from Begin).
func parseCommit(data []byte) (end event.LSN, err error) {
	if len(data) < 26 || data[0] != 'C' {
		return 0, fmt.Errorf("malformed Commit message (%d bytes)", len(data))
	}
	return event.LSN(binary.BigEndian.Uint64(data[10:])), nil
}

// unixToPostgresEpoch is 2000-01-01 00:00:00 UTC, PostgreSQL's epoch, in
// microseconds since the Unix one.
const unixToPostgresEpoch = 946_684_800_000_000

// pgTime reads a timestamp of the replication protocol: an Int64 of
// microseconds since PostgreSQL's epoch, as a time in the local zone
// (which is what pglogrepl gives).
func pgTime(b []byte) time.Time {
	return time.Unix(0, (unixToPostgresEpoch+int64(binary.BigEndian.Uint64(b)))*1000)
}

// checkTuple verifies one TupleData and returns its size.
func checkTuple(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, errors.New("truncated tuple")
	}
	n := int(binary.BigEndian.Uint16(b))
	pos := 2
	for range n {
		if pos >= len(b) {
			return 0, fmt.Errorf("tuple declares %d columns", n)
		}
		kind := b[pos]
		pos++
		switch kind {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if len(b)-pos < 4 {
				return 0, errors.New("truncated column length")
			}
			l := uint64(binary.BigEndian.Uint32(b[pos:]))
			pos += 4
			if l > uint64(len(b)-pos) {
				return 0, fmt.Errorf("column declares %d bytes", l)
			}
			pos += int(l)
		}
	}
	return pos, nil
}

// tupleColumnAt reads the column of a checked TupleData that starts at pos: its
// kind, its data (text and binary columns only) and where the next one
// starts.
func tupleColumnAt(t []byte, pos int) (kind byte, data []byte, next int) {
	kind, pos = t[pos], pos+1
	if kind == pglogrepl.TupleDataTypeText || kind == pglogrepl.TupleDataTypeBinary {
		l := int(binary.BigEndian.Uint32(t[pos:]))
		return kind, t[pos+4 : pos+4+l], pos + 4 + l
	}
	return kind, nil, pos
}

// rowMessage is a pgoutput Insert, Update or Delete message (protocol
// version 1), read in place: its tuples are slices of the message, and each
// column is decoded from there into its value. pglogrepl's parser copies
// every column into an allocation of its own first, which was a third of
// the decoder's allocations.
type rowMessage struct {
	op       event.Op
	relation uint32
	// oldKind is 'K' (the key columns) or 'O' (the whole old row) when old
	// is set.
	oldKind  byte
	old, new []byte // TupleData; nil when absent
}

// parseRow reads an Insert ('I'), Update ('U') or Delete ('D') message,
// checking that every count and length it declares fits in it.
func parseRow(data []byte) (rowMessage, error) {
	var m rowMessage
	switch data[0] {
	case 'I':
		m.op = event.Insert
	case 'U':
		m.op = event.Update
	case 'D':
		m.op = event.Delete
	default:
		return m, fmt.Errorf("not a row change: %q", data[0])
	}
	if len(data) < 6 {
		return m, errors.New("too short")
	}
	m.relation = binary.BigEndian.Uint32(data[1:])
	rest := data[5:]
	for len(rest) > 0 {
		marker := rest[0]
		size, err := checkTuple(rest[1:])
		if err != nil {
			return m, err
		}
		t := rest[1 : 1+size]
		rest = rest[1+size:]
		switch {
		case marker == 'N' && m.op != event.Delete && m.new == nil:
			m.new = t
		case (marker == 'K' || marker == 'O') && m.op != event.Insert && m.old == nil && m.new == nil:
			m.old, m.oldKind = t, marker
		default:
			return m, fmt.Errorf("unexpected tuple marker %q", marker)
		}
	}
	if m.op != event.Delete && m.new == nil || m.op == event.Delete && m.old == nil {
		return m, errors.New("missing tuple")
	}
	return m, nil
}
