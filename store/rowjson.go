package store

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/smartmaintenance/relay/event"
)

// The relay's record of a row (row_state.vals) is a JSON object of the
// columns its rules compare, nearly always a few scalars. appendRow and
// parseRow read and write those directly; anything else (nested values,
// escapes, non-ASCII text, numbers JSON cannot hold) goes through
// encoding/json, so that both give exactly what encoding/json gives
// (FuzzRowJSON).

// appendRow appends r as a JSON object to dst (null when r is nil).
func appendRow(dst []byte, r event.Row) ([]byte, error) {
	if r == nil {
		return append(dst, "null"...), nil
	}
	start := len(dst)
	dst = append(dst, '{')
	first := true
	for k, v := range r {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendString(dst, k)
		dst = append(dst, ':')
		var ok bool
		if dst, ok = appendScalar(dst, v); !ok {
			b, err := json.Marshal(r)
			if err != nil {
				return dst[:start], err
			}
			return append(dst[:start], b...), nil
		}
	}
	return append(dst, '}'), nil
}

// appendScalar appends v as JSON when it is a scalar written directly, and
// reports whether it was.
func appendScalar(dst []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), true
	case bool:
		return strconv.AppendBool(dst, x), true
	case int64:
		return strconv.AppendInt(dst, x, 10), true
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return dst, false // encoding/json's error
		}
		return strconv.AppendFloat(dst, x, 'g', -1, 64), true
	case string:
		return appendString(dst, x), true
	}
	return dst, false
}

// appendString appends s as a JSON string: plain printable ASCII directly,
// anything else as encoding/json writes it.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// parseRow reads a JSON object as json.Unmarshal into an event.Row would,
// with whole numbers as int64 (wholeNumbers).
func parseRow(data []byte) (event.Row, error) {
	if r, ok := parseFlat(data); ok {
		return r, nil
	}
	var r event.Row
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return wholeNumbers(r), nil
}

// parseFlat reads an object of scalars whose strings are plain printable
// ASCII, and reports whether data was one.
func parseFlat(data []byte) (event.Row, bool) {
	p := flatParser{b: data}
	p.space()
	if !p.byte('{') {
		return nil, false
	}
	r := event.Row{}
	p.space()
	if p.byte('}') {
		return r, p.end()
	}
	for {
		p.space()
		key, ok := p.str()
		if !ok {
			return nil, false
		}
		p.space()
		if !p.byte(':') {
			return nil, false
		}
		p.space()
		v, ok := p.value()
		if !ok {
			return nil, false
		}
		r[key] = v
		p.space()
		if p.byte('}') {
			return r, p.end()
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}

type flatParser struct {
	b []byte
	i int
}

func (p *flatParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *flatParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only space is left.
func (p *flatParser) end() bool {
	p.space()
	return p.i == len(p.b)
}

func (p *flatParser) literal(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *flatParser) value() (any, bool) {
	if p.i == len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		return p.str()
	case c == 'n':
		return nil, p.literal("null")
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, false
}

// str reads a string without escapes or bytes outside printable ASCII.
func (p *flatParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c < 0x20 || c >= utf8.RuneSelf || c == '\\':
			return "", false
		}
	}
	return "", false
}

// number reads a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *flatParser) number() (any, bool) {
	start := p.i
	p.byte('-')
	if p.byte('0') {
		// no more digits may follow a leading zero
	} else if !p.digits() {
		return nil, false
	}
	if p.byte('.') && !p.digits() {
		return nil, false
	}
	if p.byte('e') || p.byte('E') {
		if !p.byte('+') {
			p.byte('-')
		}
		if !p.digits() {
			return nil, false
		}
	}
	f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
	if err != nil { // out of float64's range: encoding/json's error
		return nil, false
	}
	return whole(f), true
}

func (p *flatParser) digits() bool {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}

// rowScan scans a row's record (JSON text) with parseRow, from the driver's
// buffer.
type rowScan struct{ row event.Row }

func (r *rowScan) ScanBytes(b []byte) error {
	if b == nil {
		r.row = nil
		return nil
	}
	row, err := parseRow(b)
	if err != nil {
		return err
	}
	r.row = row
	return nil
}
