package cdc

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/smartmaintenance/relay/event"
)

// relation is the decoder's view of a table, as the last Relation message
// described it. pgoutput sends a new Relation message before the first
// change after any ALTER TABLE, so replacing the cached entry is enough to
// follow schema changes while running.
type relation struct {
	schema  string
	name    string
	columns []column
}

type column struct {
	name string
	oid  uint32
	key  bool
}

// decoder turns pgoutput messages into event.Changes.
type decoder struct {
	relations map[uint32]*relation
	types     *pgtype.Map
}

func newDecoder() *decoder {
	return &decoder{relations: map[uint32]*relation{}, types: pgtype.NewMap()}
}

func (d *decoder) relation(m *pglogrepl.RelationMessage) {
	r := &relation{schema: m.Namespace, name: m.RelationName, columns: make([]column, len(m.Columns))}
	for i, c := range m.Columns {
		r.columns[i] = column{name: c.Name, oid: c.DataType, key: c.Flags&1 == 1}
	}
	d.relations[m.RelationID] = r
}

func (d *decoder) lookup(id uint32) (*relation, error) {
	r, ok := d.relations[id]
	if !ok {
		return nil, fmt.Errorf("change for unknown relation %d (no Relation message received)", id)
	}
	return r, nil
}

// tuple decodes one TupleData that parseRow checked. It returns the row and
// the columns whose value is an unchanged TOAST value that the server did
// not send.
func (d *decoder) tuple(r *relation, t []byte) (event.Row, []string, error) {
	if t == nil {
		return nil, nil, nil
	}
	n := int(binary.BigEndian.Uint16(t))
	if n > len(r.columns) {
		return nil, nil, fmt.Errorf("table %s: tuple has %d columns, relation has %d", r.name, n, len(r.columns))
	}
	row := make(event.Row, n)
	var unchanged []string
	pos := 2
	for i := range n {
		col := r.columns[i]
		var kind byte
		var data []byte
		kind, data, pos = tupleColumnAt(t, pos)
		switch kind {
		case pglogrepl.TupleDataTypeNull:
			row[col.name] = nil
		case pglogrepl.TupleDataTypeToast:
			unchanged = append(unchanged, col.name)
		case pglogrepl.TupleDataTypeText:
			v, err := d.value(col.oid, data)
			if err != nil {
				return nil, nil, fmt.Errorf("table %s column %s: %w", r.name, col.name, err)
			}
			row[col.name] = v
		default:
			return nil, nil, fmt.Errorf("table %s column %s: unsupported tuple data kind %q", r.name, col.name, kind)
		}
	}
	return row, unchanged, nil
}

// value converts a column's text representation into the normalised value
// kinds of event.Row.
func (d *decoder) value(oid uint32, data []byte) (any, error) {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		return strconv.ParseInt(string(data), 10, 64)
	case pgtype.Float4OID, pgtype.Float8OID:
		return strconv.ParseFloat(string(data), 64)
	case pgtype.BoolOID:
		return len(data) > 0 && data[0] == 't', nil
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UUIDOID, pgtype.NumericOID:
		return string(data), nil
	case pgtype.JSONOID, pgtype.JSONBOID:
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("decode json: %w", err)
		}
		return v, nil
	case pgtype.TimestamptzOID, pgtype.TimestampOID:
		if s, ok := isoTimestamp(oid, data); ok {
			return s, nil
		}
		return d.timestamp(oid, data)
	}
	if t, ok := d.types.TypeForOID(oid); ok {
		if _, isArray := t.Codec.(*pgtype.ArrayCodec); isArray {
			v, err := t.Codec.DecodeValue(d.types, oid, pgtype.TextFormatCode, data)
			if err != nil {
				return nil, err
			}
			return normalise(v), nil
		}
	}
	// Dates, enums, intervals, domains and any type the relay does not know:
	// PostgreSQL's own text form.
	return string(data), nil
}

// isoTimestamp converts a timestamp (oid TimestamptzOID or TimestampOID) in
// PostgreSQL's ISO text form, as the relay's connections have it (DateStyle
// ISO, TimeZone UTC: see textForms), to the RFC 3339 form timestamp gives
// it, without parsing it into a time and formatting it again:
// "2026-04-24 02:15:30.12+00" becomes "2026-04-24T02:15:30.12Z", and
// "2026-04-24 02:15:30.12" "2026-04-24T02:15:30.12". It reports false for
// any other shape (a year past 9999 or before 1, another offset, infinity,
// more than six digits of fraction, or a fraction with a trailing zero,
// which PostgreSQL does not send and RFC3339Nano would drop), which
// timestamp then parses; where it reports true, the result is what
// timestamp would have made (FuzzISOTimestamp).
func isoTimestamp(oid uint32, data []byte) (string, bool) {
	zone, to := "", "" // timestamp: no offset
	if oid == pgtype.TimestamptzOID {
		zone, to = "+00", "Z"
	}
	const n = len("2006-01-02 15:04:05")
	if len(data) < n+len(zone) || string(data[len(data)-len(zone):]) != zone {
		return "", false
	}
	body := data[:len(data)-len(zone)]
	for i, c := range body[:n] {
		switch i {
		case 4, 7:
			if c != '-' {
				return "", false
			}
		case 10:
			if c != ' ' {
				return "", false
			}
		case 13, 16:
			if c != ':' {
				return "", false
			}
		default:
			if c < '0' || c > '9' {
				return "", false
			}
		}
	}
	two := func(i int) int { return int(body[i]-'0')*10 + int(body[i+1]-'0') }
	year, month, day := two(0)*100+two(2), two(5), two(8)
	if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		two(11) > 23 || two(14) > 59 || two(17) > 59 {
		return "", false
	}
	if frac := body[n:]; len(frac) > 0 {
		if len(frac) < 2 || len(frac) > 7 || frac[0] != '.' || frac[len(frac)-1] == '0' {
			return "", false
		}
		for _, c := range frac[1:] {
			if c < '0' || c > '9' {
				return "", false
			}
		}
	}
	var buf [32]byte
	out := append(append(buf[:0], body...), to...)
	out[10] = 'T'
	return string(out), true
}

// daysIn is the number of days of month in year (proleptic Gregorian).
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// timestamp parses a timestamp (oid TimestamptzOID or TimestampOID) in any
// text form pgtype reads and formats it as RFC 3339, in UTC when it has a
// time zone.
func (d *decoder) timestamp(oid uint32, data []byte) (string, error) {
	if oid == pgtype.TimestamptzOID {
		var ts pgtype.Timestamptz
		if err := d.types.Scan(oid, pgtype.TextFormatCode, data, &ts); err != nil {
			return "", err
		}
		return formatTime(ts.Time.UTC(), ts.InfinityModifier, time.RFC3339Nano), nil
	}
	var ts pgtype.Timestamp
	if err := d.types.Scan(oid, pgtype.TextFormatCode, data, &ts); err != nil {
		return "", err
	}
	return formatTime(ts.Time, ts.InfinityModifier, "2006-01-02T15:04:05.999999999"), nil
}

func formatTime(t time.Time, inf pgtype.InfinityModifier, layout string) string {
	switch inf {
	case pgtype.Infinity:
		return "infinity"
	case pgtype.NegativeInfinity:
		return "-infinity"
	}
	return t.Format(layout)
}

// normalise maps values decoded by pgtype onto event.Row's value kinds.
func normalise(v any) any {
	switch x := v.(type) {
	case nil, bool, int64, float64, string:
		return x
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int:
		return int64(x)
	case float32:
		return float64(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalise(e)
		}
		return out
	case map[string]any:
		for k, e := range x {
			x[k] = normalise(e)
		}
		return x
	case [16]byte:
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16])
	case pgtype.Numeric:
		b, err := x.MarshalJSON()
		if err != nil {
			return nil
		}
		return string(b)
	case fmt.Stringer:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// change turns a row change message into a change. tx is the open
// transaction; seq its next index.
func (d *decoder) change(m rowMessage, tx *event.Tx, seq int) (*event.Change, error) {
	r, err := d.lookup(m.relation)
	if err != nil {
		return nil, err
	}
	c := &event.Change{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Seq: seq, Schema: r.schema, Table: r.name, Op: m.op}
	if c.New, c.Unchanged, err = d.tuple(r, m.new); err != nil {
		return nil, err
	}
	if m.old != nil {
		if c.Old, _, err = d.tuple(r, m.old); err != nil {
			return nil, err
		}
		if m.oldKind == 'K' {
			c.Old = keyOnly(r, c.Old)
		}
	}
	return c, nil
}

// keyOnly drops the null placeholders that pgoutput sends for non-key
// columns of a key-only old tuple, so they do not read as real nulls.
func keyOnly(r *relation, row event.Row) event.Row {
	for _, c := range r.columns {
		if !c.key {
			delete(row, c.name)
		}
	}
	return row
}

// truncated lists the tables a Truncate message names.
func (d *decoder) truncated(m *pglogrepl.TruncateMessage, tx *event.Tx, seq int) ([]*event.Change, error) {
	out := make([]*event.Change, 0, len(m.RelationIDs))
	for i, id := range m.RelationIDs {
		r, err := d.lookup(id)
		if err != nil {
			return nil, err
		}
		out = append(out, &event.Change{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Seq: seq + i, Schema: r.schema, Table: r.name, Op: event.Truncate})
	}
	return out, nil
}
