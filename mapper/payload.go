package mapper

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/smartmaintenance/relay/event"
)

// TimestampLayout is the layout of a payload's timestamp: RFC 3339 with
// microseconds, the precision of PostgreSQL's commit times, so that
// transactions committed within the same second still carry distinct,
// increasing timestamps. The fraction always has six digits (RFC3339Nano
// would trim trailing zeros) and the offset is always numeric, "+00:00"
// rather than "Z" for UTC, so that every company's timestamps have the
// same shape and those of one offset sort as strings
// (2026-04-24T09:15:30.123456+07:00).
const TimestampLayout = "2006-01-02T15:04:05.000000-07:00"

// body writes the payload:
//
//	{"event":…,"timestamp":…,"company_id":…,"company_name":…,"data":{…}}
//
// in that order, compact, without a trailing newline. A data field whose
// expression reads an unchanged TOAST column that could not be filled is
// left out: its value is unknown, which is not the same as null.
func (m *Mapper) body(s *scratch, r *rule, c *event.Change, newRow, oldRow map[string]any, id int64, dir *Companies, unfilled []string) ([]byte, error) {
	co, _ := dir.Lookup(id)
	loc := co.Location
	if loc == nil {
		loc = m.loc
	}
	b := &s.buf
	b.Reset()
	b.WriteString(`{"event":`)
	b.Write(r.eventJSON)
	b.WriteString(`,"timestamp":"`)
	s.num = appendTimestamp(s.num[:0], c.CommitTime.In(loc))
	b.Write(s.num)
	b.WriteString(`","company_id":`)
	s.num = strconv.AppendInt(s.num[:0], id, 10)
	b.Write(s.num)
	b.WriteString(`,"company_name":`)
	if err := s.value(co.Name); err != nil {
		return nil, &RuleError{r.Event, "company", err}
	}
	b.WriteString(`,"data":{`)
	first := true
	for i := range r.fields {
		f := &r.fields[i]
		if len(unfilled) > 0 && readsAny(f.newCols, unfilled) {
			continue
		}
		v, err := f.eval(s, newRow, oldRow)
		if err != nil {
			return nil, &RuleError{r.Event, "data." + f.name, exprError(err)}
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.Write(f.key)
		if err := s.value(v); err != nil {
			return nil, &RuleError{r.Event, "data." + f.name, err}
		}
	}
	b.WriteString("}}")
	return bytes.Clone(b.Bytes()), nil
}

// eval evaluates the field on the change whose rows s's environment
// holds, newRow and oldRow. A field that only reads a column (see
// plainColumn) is read from its row, as the VM would read it.
func (f *field) eval(s *scratch, newRow, oldRow map[string]any) (any, error) {
	switch {
	case f.column != "" && f.old:
		return oldRow[f.column], nil
	case f.column != "":
		return newRow[f.column], nil
	}
	return s.vm.Run(f.prog, s.env)
}

// appendTimestamp appends t formatted with TimestampLayout, as
// t.AppendFormat(b, TimestampLayout) would, without reading the layout
// for each event. Years outside 0–9999, and offsets of 100 hours or more
// (which no zone has), take AppendFormat itself.
func appendTimestamp(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	_, offset := t.Zone()
	if year < 0 || year > 9999 || offset <= -100*3600 || offset >= 100*3600 {
		return t.AppendFormat(b, TimestampLayout)
	}
	hour, minute, sec := t.Clock()
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/1000, 6)
	// "-07:00": the offset in whole minutes, truncated toward zero as
	// AppendFormat truncates it.
	zone := offset / 60
	if zone < 0 {
		b = append(b, '-')
		zone = -zone
	} else {
		b = append(b, '+')
	}
	b = appendDigits(b, zone/60, 2)
	b = append(b, ':')
	return appendDigits(b, zone%60, 2)
}

// appendDigits appends v (0 ≤ v < 10^width) in width digits, zero padded.
func appendDigits(b []byte, v, width int) []byte {
	var d [8]byte
	for i := width - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:width]...)
}

func readsAny(cols, unfilled []string) bool {
	for _, col := range cols {
		if slices.Contains(unfilled, col) {
			return true
		}
	}
	return false
}

// value appends v to s.buf as JSON. The common scalars are written
// directly; the rest goes through encoding/json, without HTML escaping.
func (s *scratch) value(v any) error {
	b := &s.buf
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
		return nil
	case bool:
		b.WriteString(strconv.FormatBool(x))
		return nil
	case int64:
		s.num = strconv.AppendInt(s.num[:0], x, 10)
		b.Write(s.num)
		return nil
	case int:
		s.num = strconv.AppendInt(s.num[:0], int64(x), 10)
		b.Write(s.num)
		return nil
	case string:
		if plain(x) {
			b.WriteByte('"')
			b.WriteString(x)
			b.WriteByte('"')
			return nil
		}
	}
	v, _ = jsonSafe(v)
	if err := s.enc.Encode(v); err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	b.Truncate(b.Len() - 1) // Encode ends with a newline
	return nil
}

// plain reports whether s is printable ASCII with no quote or backslash:
// what encoding/json, not escaping HTML, writes as it is between quotes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// jsonSafe replaces the floats that JSON cannot hold (NaN, ±Inf, which a
// double precision column may contain) with PostgreSQL's text for them,
// "NaN", "Infinity" and "-Infinity". It copies a list or object only when
// something in it changes, and reports whether anything did.
func jsonSafe(v any) (any, bool) {
	switch x := v.(type) {
	case float64:
		return nonFinite(x)
	case float32:
		return nonFinite(float64(x))
	case []any:
		var out []any
		for i, e := range x {
			se, changed := jsonSafe(e)
			if changed && out == nil {
				out = slices.Clone(x)
			}
			if changed {
				out[i] = se
			}
		}
		if out != nil {
			return out, true
		}
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			se, changed := jsonSafe(e)
			if changed && out == nil {
				out = maps.Clone(x)
			}
			if changed {
				out[k] = se
			}
		}
		if out != nil {
			return out, true
		}
	}
	return v, false
}

func nonFinite(f float64) (any, bool) {
	switch {
	case math.IsNaN(f):
		return "NaN", true
	case math.IsInf(f, 1):
		return "Infinity", true
	case math.IsInf(f, -1):
		return "-Infinity", true
	}
	return f, false
}

// marshal encodes v as compact JSON without escaping <, > and &.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	v, _ = jsonSafe(v)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
