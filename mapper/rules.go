package mapper

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	yaml "go.yaml.in/yaml/v3"
)

// Rule turns row changes of one table into one event type. Rules are data:
// a default set ships with the relay (rules.yaml) and config can replace or
// extend it.
type Rule struct {
	// Event is the event type, e.g. "task.completed".
	Event string `koanf:"event" json:"event" yaml:"event"`
	// Table is the watched table (unqualified name, schema public).
	Table string `koanf:"table" json:"table" yaml:"table"`
	// On lists the operations the rule looks at: insert, update, delete.
	// Empty means insert and update.
	On []string `koanf:"on" json:"on,omitempty" yaml:"on,omitempty"`
	// When is a boolean expression over new, old, op and table; empty means
	// always.
	When string `koanf:"when" json:"when,omitempty" yaml:"when,omitempty"`
	// Company is an expression giving the company id; empty means
	// new.company_id (old.company_id for deletes).
	Company string `koanf:"company" json:"company,omitempty" yaml:"company,omitempty"`
	// Data lists the payload's data fields in order, each a one-entry map
	// from field name to expression, e.g. [{task_id: new.id}, {status: new.status}].
	Data []map[string]string `koanf:"data" json:"data,omitempty" yaml:"data,omitempty"`
}

//go:embed rules.yaml
var defaultRulesYAML []byte

var defaultRules = sync.OnceValue(func() []Rule {
	rules, err := parseRules(defaultRulesYAML)
	if err != nil {
		// The file is embedded at build time and checked by the tests.
		panic(fmt.Sprintf("mapper: embedded rules.yaml: %v", err))
	}
	return rules
})

// DefaultRules returns the rules that ship with the relay (rules.yaml in this
// package; docs/EVENTS.md describes them). Each call returns a fresh copy
// that the caller may change.
func DefaultRules() []Rule { return cloneRules(defaultRules()) }

// parseRules decodes a YAML list of rules, rejecting unknown keys.
func parseRules(data []byte) ([]Rule, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var rules []Rule
	if err := dec.Decode(&rules); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode rules: %w", err)
	}
	return rules, nil
}

// Merge combines the default rules with the rules from config.
//
// With replace, the result is extra alone. Otherwise a rule of extra whose
// Event names a default rule takes that rule's place (keeping its position),
// and the others are appended in their order. Two rules of extra with the
// same Event are both kept, so that New reports the duplicate instead of one
// silently winning. Merge does not change its arguments.
func Merge(defaults, extra []Rule, replace bool) []Rule {
	if replace {
		return cloneRules(extra)
	}
	out := cloneRules(defaults)
	at := make(map[string]int, len(out))
	for i, r := range out {
		if _, dup := at[r.Event]; !dup {
			at[r.Event] = i
		}
	}
	for _, r := range cloneRules(extra) {
		if i, ok := at[r.Event]; ok {
			out[i] = r
			delete(at, r.Event) // a second override of the same event is appended
			continue
		}
		out = append(out, r)
	}
	return out
}

func cloneRules(rules []Rule) []Rule {
	if rules == nil {
		return nil
	}
	out := make([]Rule, len(rules))
	for i, r := range rules {
		r.On = slices.Clone(r.On)
		if r.Data != nil {
			data := make([]map[string]string, len(r.Data))
			for j, d := range r.Data {
				data[j] = maps.Clone(d)
			}
			r.Data = data
		}
		out[i] = r
	}
	return out
}
