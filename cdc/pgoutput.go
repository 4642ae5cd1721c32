package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/smartmaintenance/relay/event"
)

// parse decodes a pgoutput message: a row change into a rowMessage, any
// other into pglogrepl's message, turning a panic of its decoder on a
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
