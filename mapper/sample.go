package mapper

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/smartmaintenance/relay/event"
)

// RuleTable returns the table of the rule that produces eventType, and
// false when no rule does.
func (m *Mapper) RuleTable(eventType string) (string, bool) {
	for _, r := range m.rules {
		if r.Event == eventType {
			return r.Table, true
		}
	}
	return "", false
}

// SampleData returns the "data" object that the rule of eventType would
// send for a change whose new and old rows are both row, regardless of its
// When: each field's expression evaluated and encoded exactly as Map does
// for a real change, so that a test event built from a row of the right
// column types has the types of a real event. A field whose expression
// fails on row is null, and its error is returned with the object.
func (m *Mapper) SampleData(eventType string, row event.Row) ([]byte, error) {
	return m.SampleChange(eventType, row, row)
}

// sampleRule is the rule that produces eventType, and the operation a
// sample of it stands for: an update where the rule takes updates.
func (m *Mapper) sampleRule(eventType string) (*rule, event.Op, error) {
	var r *rule
	for _, cand := range m.rules {
		if cand.Event == eventType {
			r = cand
		}
	}
	if r == nil {
		return nil, "", fmt.Errorf("no rule produces %q", eventType)
	}
	op := event.Update
	if r.ops&opUpdate == 0 {
		op = event.Insert
		if r.ops&opInsert == 0 {
			op = event.Delete
		}
	}
	return r, op, nil
}

// SampleFires reports whether the rule of eventType fires for a sample
// change from old to new (its When true; a rule without one always fires).
// A When that fails or is not boolean does not fire.
func (m *Mapper) SampleFires(eventType string, newRow, oldRow event.Row) bool {
	r, op, err := m.sampleRule(eventType)
	if err != nil {
		return false
	}
	if r.when == nil {
		return true
	}
	s := m.sampleScratch(r, op, newRow, oldRow)
	defer m.putScratch(s)
	out, err := s.vm.Run(r.when, s.env)
	fires, _ := out.(bool)
	return err == nil && fires
}

// sampleScratch is a scratch whose environment is a sample change of r's
// table from oldRow to newRow; putScratch returns it.
func (m *Mapper) sampleScratch(r *rule, op event.Op, newRow, oldRow event.Row) *scratch {
	s := m.scratch.Get().(*scratch)
	s.env[envNew] = map[string]any(newRow)
	s.env[envOld] = map[string]any(oldRow)
	s.env[envOp] = string(op)
	s.env[envTable] = r.Table
	return s
}

func (m *Mapper) putScratch(s *scratch) {
	clear(s.env)
	m.scratch.Put(s)
}

// SampleChange is SampleData for a change from old to new.
func (m *Mapper) SampleChange(eventType string, newRow, oldRow event.Row) ([]byte, error) {
	r, op, err := m.sampleRule(eventType)
	if err != nil {
		return nil, err
	}
	s := m.sampleScratch(r, op, newRow, oldRow)
	defer m.putScratch(s)

	// The same encoding as the data part of body; body itself also writes
	// the envelope and skips unfilled TOAST columns, which a sample has not.
	var errs []error
	b := &s.buf
	b.Reset()
	b.WriteByte('{')
	for i := range r.fields {
		f := &r.fields[i]
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(f.key)
		v, err := f.eval(s, newRow, oldRow)
		if err == nil {
			mark := b.Len()
			if err = s.value(v); err != nil {
				b.Truncate(mark)
			}
		}
		if err != nil {
			errs = append(errs, &RuleError{r.Event, "data." + f.name, exprError(err)})
			b.WriteString("null")
		}
	}
	b.WriteByte('}')
	return bytes.Clone(b.Bytes()), errors.Join(errs...)
}
