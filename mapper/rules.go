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
