package mapper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/vm"

	"github.com/smartmaintenance/relay/event"
)

// empty stands for the new row of a delete and the old row of an insert.
// Expressions never change the maps they read.
var empty = map[string]any{}

// scratch is the per-call working memory of Map, pooled so that a steady
// stream of changes allocates little besides the drafts themselves.
type scratch struct {
	vm  vm.VM
	env map[string]any
	buf bytes.Buffer
	enc *json.Encoder // writes to buf
	num []byte
}

func newScratch() *scratch {
	s := &scratch{env: make(map[string]any, 4), num: make([]byte, 0, len(TimestampLayout))}
	s.enc = json.NewEncoder(&s.buf)
	s.enc.SetEscapeHTML(false)
	return s
}

// Map derives the events of one change and the relay's next record of the
// row. prior is that record as it stood before the change (nil when the
// relay has none); dir names the companies (nil: none known).
//
// Expressions see:
//
//   - old: prior overlaid with the columns of c.Old (the key columns, or the
//     whole old row under REPLICA IDENTITY FULL); empty for an insert.
//   - new: c.New, where a column listed in c.Unchanged (an unchanged TOAST
//     value the server did not send) is filled from old when old has it and
//     is otherwise absent; empty for a delete.
//   - op: "insert", "update" or "delete"; table: the table's name.
//
// Every rule of the table whose On holds the operation and whose When is
// true yields one draft, in rule order. A truncate, or a change of a table
// that no rule uses, yields nothing.
//
// next is the row's tracked columns (see Tables) taken from the filled new
// row; a tracked column that the change does not carry keeps its value in
// old, and one that old does not know either stays absent (never null).
// next is nil when there is nothing to keep: for a delete, a truncate, or a
// table that tracks no column. The caller then drops its record.
//
// A rule that fails on this change (a runtime error in an expression, a
// non-boolean When, a company id that cannot be determined, a value that
// cannot be encoded) contributes a *RuleError to err and no draft; drafts
// from the other rules and next are still returned and valid, so the caller
// can log err and carry on.
//
// Map does not change c or prior. It is safe for concurrent use.
func (m *Mapper) Map(c *event.Change, prior event.Row, dir *Companies) (drafts []Draft, next event.Row, err error) {
	t := m.tables[c.Table]
	if t == nil || c.Op == event.Truncate {
		return nil, nil, nil
	}
	bit := opBit(c.Op)
	if bit == 0 {
		return nil, nil, fmt.Errorf("map %s: unknown operation %q", c.Table, c.Op)
	}

	var oldRow, newRow map[string]any
	var unfilled []string // columns of c.Unchanged that new lacks
	if c.Op == event.Insert {
		oldRow = empty
	} else {
		oldRow = overlay(prior, c.Old)
	}
	if c.Op == event.Delete {
		newRow = empty
	} else {
		newRow, unfilled = fill(c.New, c.Unchanged, oldRow)
	}
	if c.Op != event.Delete && len(t.track) > 0 {
		next = make(event.Row, len(t.track))
		for _, col := range t.track {
			if v, ok := newRow[col]; ok {
				next[col] = v
			} else if v, ok := oldRow[col]; ok {
				next[col] = v
			}
		}
	}

	s := m.scratch.Get().(*scratch)
	defer func() {
		clear(s.env) // do not keep the caller's rows alive
		m.scratch.Put(s)
	}()
	s.env[envNew] = newRow
	s.env[envOld] = oldRow
	s.env[envOp] = string(c.Op)
	s.env[envTable] = c.Table

	var errs []error
	for _, r := range t.rules {
		if r.ops&bit == 0 {
			continue
		}
		if r.when != nil {
			out, err := s.vm.Run(r.when, s.env)
			if err != nil {
				errs = append(errs, &RuleError{r.Event, "when", exprError(err)})
				continue
			}
			fire, ok := out.(bool)
			if !ok {
				errs = append(errs, &RuleError{r.Event, "when", fmt.Errorf("result is %T, not bool", out)})
				continue
			}
			if !fire {
				continue
			}
		}
		id, err := r.companyID(s, c.Op, newRow, oldRow)
		if err != nil {
			errs = append(errs, &RuleError{r.Event, "company", err})
			continue
		}
		body, err := m.body(s, r, c, newRow, oldRow, id, dir, unfilled)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		drafts = append(drafts, Draft{Type: r.Event, CompanyID: id, Body: body})
	}
	return drafts, next, errors.Join(errs...)
}

// overlay returns prior with the columns of sent laid over it, without
// changing either.
func overlay(prior, sent event.Row) map[string]any {
	switch {
	case len(sent) == 0 && len(prior) == 0:
		return empty
	case len(sent) == 0:
		return normalise(prior)
	case len(prior) == 0:
		return sent
	}
	out := make(map[string]any, len(prior)+len(sent))
	for k, v := range prior {
		out[k] = normaliseValue(v)
	}
	for k, v := range sent {
		out[k] = v
	}
	return out
}

// normalise turns json.Number values, which a record read back from JSON
// may hold, into int64 or float64 as the change feed would send them. It
// copies row only when it has to.
func normalise(row event.Row) map[string]any {
	for _, v := range row {
		if _, ok := v.(json.Number); ok {
			out := make(map[string]any, len(row))
			for k, v := range row {
				out[k] = normaliseValue(v)
			}
			return out
		}
	}
	return row
}

func normaliseValue(v any) any {
	n, ok := v.(json.Number)
	if !ok {
		return v
	}
	if i, err := n.Int64(); err == nil {
		return i
	}
	if f, err := n.Float64(); err == nil {
		return f
	}
	return string(n)
}

// fill returns the new row with its unchanged TOAST columns taken from old
// where old has them, and the unchanged columns it could not fill.
func fill(row event.Row, unchanged []string, old map[string]any) (map[string]any, []string) {
	if row == nil {
		row = empty
	}
	if len(unchanged) == 0 {
		return row, nil
	}
	var out map[string]any
	var unfilled []string
	for _, col := range unchanged {
		v, ok := old[col]
		if !ok {
			unfilled = append(unfilled, col)
			continue
		}
		if out == nil {
			out = make(map[string]any, len(row)+len(unchanged))
			for k, v := range row {
				out[k] = v
			}
		}
		out[col] = v
	}
	if out == nil {
		return row, unfilled
	}
	return out, unfilled
}

// companyID evaluates the rule's company expression, by default
// new.company_id (old.company_id for a delete).
func (r *rule) companyID(s *scratch, op event.Op, newRow, oldRow map[string]any) (int64, error) {
	var v any
	if r.company == nil {
		row, name := newRow, "new."+companyColumn
		if op == event.Delete {
			row, name = oldRow, "old."+companyColumn
		}
		var ok bool
		if v, ok = row[companyColumn]; !ok {
			return 0, fmt.Errorf("%s is unknown", name)
		}
	} else {
		var err error
		if v, err = s.vm.Run(r.company, s.env); err != nil {
			return 0, exprError(err)
		}
	}
	id, err := toInt64(v)
	if err != nil {
		return 0, err
	}
	return id, nil
}

// toInt64 accepts the forms an id takes: any Go integer, an integral float
// and a string holding an integer (numeric columns arrive as text).
func toInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), nil
		}
	case uint32:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), nil
		}
	case float64:
		if x == math.Trunc(x) && x >= -(1<<63) && x < 1<<63 {
			return int64(x), nil
		}
	case float32:
		return toInt64(float64(x))
	case json.Number:
		return toInt64(string(x))
	case string:
		s := strings.TrimSpace(x)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		// A numeric such as "12.000".
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) {
			return toInt64(f)
		}
	case nil:
		return 0, errors.New("company id is null")
	}
	return 0, fmt.Errorf("company id %v (%T) is not an integer", v, v)
}
