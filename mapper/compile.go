package mapper

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/smartmaintenance/relay/event"
)

// ops is a set of operations.
type ops uint8

const (
	opInsert ops = 1 << iota
	opUpdate
	opDelete
)

func opBit(op event.Op) ops {
	switch op {
	case event.Insert:
		return opInsert
	case event.Update:
		return opUpdate
	case event.Delete:
		return opDelete
	}
	return 0
}

// rule is a compiled Rule.
type rule struct {
	Rule
	ops       ops
	when      *vm.Program // nil: always
	company   *vm.Program // nil: new.company_id, old.company_id for deletes
	fields    []field
	reads     []string // columns read as new.<col> or old.<col>, sorted, unique
	tracks    []string // columns read as old.<col> (and company_id, see New)
	eventJSON []byte   // the event name as a JSON string
}

type field struct {
	name    string
	key     []byte // `"name":`
	prog    *vm.Program
	newCols []string // columns the expression reads as new.<col>
	// column is set when the expression only reads that column of new
	// (of old when old is set): eval reads it without the VM (plainColumn).
	column string
	old    bool
}

// RuleError reports a rule that is invalid, or that failed on one change.
// Field is "event", "table", "on", "when", "company" or "data.<name>".
type RuleError struct {
	Event string
	Field string
	Err   error
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("rule %q: %s: %v", e.Event, e.Field, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// New compiles rules. Every expression is compiled once, here; an error
// names the rule and the field, e.g.
//
//	rule "task.completed": when: unknown name foo (1:1)
//
// Besides expressions that do not compile, New rejects an empty Event or
// Table, an operation in On other than insert, update and delete, two rules
// with the same Event, data entries that do not hold exactly one field, and
// field names used twice in one rule.
func New(rules []Rule, opts Options) (*Mapper, error) {
	m := &Mapper{
		tables:    make(map[string]*table),
		loc:       opts.DefaultLocation,
		companies: opts.CompaniesTable,
	}
	if m.loc == nil {
		m.loc = time.UTC
	}
	if m.companies == "" {
		m.companies = "companies"
	}
	keyOf := func(name string) []string {
		if k := opts.Keys[name]; len(k) > 0 {
			return slices.Clone(k)
		}
		return []string{"id"}
	}
	for name, k := range opts.Keys {
		if slices.Contains(k, "") {
			return nil, fmt.Errorf("key of table %q: empty column name", name)
		}
	}

	seen := make(map[string]bool, len(rules))
	for i, r := range rules {
		if r.Event == "" {
			return nil, fmt.Errorf("rule %d (table %q): event: empty", i+1, r.Table)
		}
		if seen[r.Event] {
			return nil, &RuleError{r.Event, "event", fmt.Errorf("another rule has the same event")}
		}
		seen[r.Event] = true
		cr, err := compileRule(r)
		if err != nil {
			return nil, err
		}
		m.rules = append(m.rules, cr)
		m.events = append(m.events, r.Event)
		t := m.tables[r.Table]
		if t == nil {
			t = &table{name: r.Table, key: keyOf(r.Table)}
			m.tables[r.Table] = t
		}
		t.rules = append(t.rules, cr)
		t.track = append(t.track, cr.tracks...)
	}
	if m.tables[m.companies] == nil {
		m.tables[m.companies] = &table{name: m.companies, key: keyOf(m.companies)}
	}
	ct := m.tables[m.companies]
	ct.track = append(ct.track, "name", "time_zone")
	for _, t := range m.tables {
		slices.Sort(t.track)
		t.track = slices.Compact(t.track)
	}
	sort.Strings(m.events)
	m.scratch.New = func() any { return newScratch() }
	return m, nil
}

// compileRule compiles one rule and finds the columns it reads and the
// ones the relay must record for it (see Mapper.Tables).
func compileRule(r Rule) (*rule, error) {
	fail := func(field string, err error) error { return &RuleError{r.Event, field, err} }
	if r.Table == "" {
		return nil, fail("table", fmt.Errorf("empty"))
	}
	if err := checkTable(r.Table); err != nil {
		return nil, fail("table", err)
	}
	cr := &rule{Rule: r}
	if len(r.On) == 0 {
		cr.ops = opInsert | opUpdate
	}
	for _, op := range r.On {
		bit := opBit(event.Op(op))
		if bit == 0 {
			return nil, fail("on", fmt.Errorf("unknown operation %q (want insert, update or delete)", op))
		}
		cr.ops |= bit
	}
	var reads, tracks []string
	use := func(rf refs) {
		reads = append(reads, rf.new...)
		reads = append(reads, rf.old...)
		tracks = append(tracks, rf.old...)
	}
	if r.When != "" {
		prog, rf, err := compile(r.When, true)
		if err != nil {
			return nil, fail("when", err)
		}
		cr.when = prog
		use(rf)
	}
	if r.Company != "" {
		prog, rf, err := compile(r.Company, false)
		if err != nil {
			return nil, fail("company", err)
		}
		cr.company = prog
		use(rf)
	} else {
		// The default reads new.company_id, and old.company_id for a
		// delete: under the default replica identity a delete carries only
		// the key, so the relay must record company_id itself.
		reads = append(reads, companyColumn)
		if cr.ops&opDelete != 0 {
			tracks = append(tracks, companyColumn)
		}
	}
	if err := cr.compileData(use, fail); err != nil {
		return nil, err
	}
	slices.Sort(reads)
	slices.Sort(tracks)
	cr.reads = slices.Compact(reads)
	cr.tracks = slices.Compact(tracks)
	cr.eventJSON, _ = json.Marshal(r.Event)
	return cr, nil
}

// compileData compiles the payload's data fields in order. use records the
// columns each expression reads; fail names the rule and the field.
func (cr *rule) compileData(use func(refs), fail func(field string, err error) error) error {
	names := make(map[string]bool, len(cr.Data))
	for i, d := range cr.Data {
		if len(d) != 1 {
			return fail(fmt.Sprintf("data[%d]", i), fmt.Errorf("has %d entries, want exactly one (name: expression)", len(d)))
		}
		for name, src := range d {
			if name == "" {
				return fail(fmt.Sprintf("data[%d]", i), fmt.Errorf("empty field name"))
			}
			if names[name] {
				return fail("data."+name, fmt.Errorf("field appears twice"))
			}
			names[name] = true
			if src == "" {
				return fail("data."+name, fmt.Errorf("empty expression"))
			}
			prog, rf, err := compile(src, false)
			if err != nil {
				return fail("data."+name, err)
			}
			use(rf)
			key, _ := json.Marshal(name)
			f := field{name: name, key: append(key, ':'), prog: prog, newCols: rf.new}
			if col, old, ok := plainColumn(src); ok {
				f.column, f.old = col, old
			}
			cr.fields = append(cr.fields, f)
		}
	}
	return nil
}

// tableRE is the form of a table name the relay can watch: an unquoted
// PostgreSQL identifier as the server stores it (folded to lower case), at
// most 63 bytes (NAMEDATALEN-1; PostgreSQL cuts longer names).
var tableRE = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)

// checkTable says why name cannot be a table of schema public that the
// relay watches, or returns nil.
func checkTable(name string) error {
	switch {
	case tableRE.MatchString(name):
		return nil
	case strings.Contains(name, ".") && tableRE.MatchString(name[strings.LastIndex(name, ".")+1:]):
		return fmt.Errorf("%q is schema-qualified; write the table's name alone (%s): the relay watches tables of schema public",
			name, name[strings.LastIndex(name, ".")+1:])
	case tableRE.MatchString(strings.ToLower(name)):
		return fmt.Errorf("%q: PostgreSQL folds unquoted names to lower case; write %q", name, strings.ToLower(name))
	case len(name) > 63:
		return fmt.Errorf("%d bytes is longer than a PostgreSQL name can be (63)", len(name))
	}
	return fmt.Errorf("%q cannot be a table name: use lower-case letters, digits, _ and $, not starting with a digit", name)
}
