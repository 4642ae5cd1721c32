package mapper

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/smartmaintenance/relay/event"
)

// Options tune a Mapper. The zero value is usable.
type Options struct {
	// DefaultLocation is the time zone of payload timestamps for a company
	// that has no valid time zone or is not in the directory. Nil means UTC.
	DefaultLocation *time.Location
	// CompaniesTable is the table that names companies and holds their time
	// zones. Its key is id; its tracked columns are name and time_zone.
	// Empty means "companies".
	CompaniesTable string
	// Keys gives the key columns of tables whose key is not id, for RowKey
	// and PriorKey. Tables not listed are keyed by id.
	Keys map[string][]string
}

// TableSpec says how the relay keeps its record of one table's rows.
type TableSpec struct {
	// Key lists the key columns (default ["id"]).
	Key []string
	// Tracked lists the columns that the relay records per row, sorted and
	// unique; see Mapper.Tables.
	Tracked []string
}

// Draft is an event as the mapper derives it: its type, its company and its
// payload bytes. The caller adds the change's position to make an
// event.Event.
type Draft struct {
	Type      string
	CompanyID int64
	Body      []byte
}

// companyColumn is the column that the default company expression reads.
const companyColumn = "company_id"

// Mapper turns row changes into events according to a set of rules. It is
// immutable after New and safe for concurrent use.
type Mapper struct {
	rules     []*rule
	tables    map[string]*table
	events    []string // sorted
	loc       *time.Location
	companies string
	scratch   sync.Pool // *scratch
}

type table struct {
	name  string
	key   []string
	track []string // sorted, unique
	rules []*rule  // this table's rules, in rule order
}

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
	names := make(map[string]bool, len(r.Data))
	for i, d := range r.Data {
		if len(d) != 1 {
			return nil, fail(fmt.Sprintf("data[%d]", i), fmt.Errorf("has %d entries, want exactly one (name: expression)", len(d)))
		}
		for name, src := range d {
			if name == "" {
				return nil, fail(fmt.Sprintf("data[%d]", i), fmt.Errorf("empty field name"))
			}
			if names[name] {
				return nil, fail("data."+name, fmt.Errorf("field appears twice"))
			}
			names[name] = true
			if src == "" {
				return nil, fail("data."+name, fmt.Errorf("empty expression"))
			}
			prog, rf, err := compile(src, false)
			if err != nil {
				return nil, fail("data."+name, err)
			}
			use(rf)
			key, _ := json.Marshal(name)
			cr.fields = append(cr.fields, field{name: name, key: append(key, ':'), prog: prog, newCols: rf.new})
		}
	}
	slices.Sort(reads)
	slices.Sort(tracks)
	cr.reads = slices.Compact(reads)
	cr.tracks = slices.Compact(tracks)
	cr.eventJSON, _ = json.Marshal(r.Event)
	return cr, nil
}

// Tables returns every table the rules use, plus the companies table, with
// how the relay keeps its record of their rows.
//
// Tracked is exactly the set of columns that some expression of the table's
// rules reads as old.<col> or old["col"] (or tests with "col" in old), plus
// company_id when a rule of the table looks at deletes and leaves Company
// empty (its default then reads old.company_id), plus name and time_zone for
// the companies table. Nothing else is recorded: in particular, an unchanged
// TOAST value of a column outside this set cannot be filled in (see Map).
func (m *Mapper) Tables() map[string]TableSpec {
	out := make(map[string]TableSpec, len(m.tables))
	for name, t := range m.tables {
		out[name] = TableSpec{Key: slices.Clone(t.key), Tracked: slices.Clone(t.track)}
	}
	return out
}

// EventTypes returns the event types of the rules, sorted.
func (m *Mapper) EventTypes() []string { return slices.Clone(m.events) }

// CompaniesTable returns the name of the companies table.
func (m *Mapper) CompaniesTable() string { return m.companies }

// Available checks the rules against the tables that exist: existing maps
// each table's name to its column names as found in the database.
//
// An event type is available when its rule's table exists. problems has one
// line for each column that a rule reads (as new.<col> or old.<col>, or
// company_id through the default company expression) but that its table
// lacks; such a rule reads nil there. A companies table without name or
// time_zone is a problem too. A table that does not exist at all is not a
// problem: the installation does not offer its events.
func (m *Mapper) Available(existing map[string][]string) (available []string, problems []string) {
	has := func(table, col string) bool { return slices.Contains(existing[table], col) }
	for _, r := range m.rules {
		if _, ok := existing[r.Table]; !ok {
			continue
		}
		available = append(available, r.Event)
		for _, col := range r.reads {
			if !has(r.Table, col) {
				problems = append(problems, fmt.Sprintf(
					"rule %q reads %s.%s, which does not exist: override the rule under mapping.rules",
					r.Event, r.Table, col))
			}
		}
	}
	if _, ok := existing[m.companies]; ok {
		for _, col := range []string{"name", "time_zone"} {
			if !has(m.companies, col) {
				problems = append(problems, fmt.Sprintf(
					"table %s has no column %s: payloads fall back to an empty company name or the default time zone",
					m.companies, col))
			}
		}
	}
	sort.Strings(available)
	return available, problems
}

// RowKey returns the key of the changed row in its table, under which the
// relay keeps its record of the row: taken from New for an insert or update,
// from Old for a delete. A single-column key is the value's plain text
// ("123"); a composite key is a JSON array of the values ([1,"a"]). ok is
// false when the table is not watched, the change is a truncate, or a key
// column is missing or null.
func (m *Mapper) RowKey(c *event.Change) (key string, ok bool) {
	t := m.tables[c.Table]
	if t == nil {
		return "", false
	}
	switch c.Op {
	case event.Insert, event.Update:
		return rowKey(t.key, c.New)
	case event.Delete:
		return rowKey(t.key, c.Old)
	}
	return "", false
}

// PriorKey returns the key under which the relay's record of the row stood
// before the change: from Old when Old holds the key (a delete, an update
// that changed the key, or any update under REPLICA IDENTITY FULL), else the
// same as RowKey. Load prior with PriorKey and store next with RowKey; when
// the two differ the record under PriorKey is obsolete.
func (m *Mapper) PriorKey(c *event.Change) (key string, ok bool) {
	t := m.tables[c.Table]
	if t == nil {
		return "", false
	}
	if c.Op == event.Update || c.Op == event.Delete {
		if k, ok := rowKey(t.key, c.Old); ok {
			return k, true
		}
	}
	return m.RowKey(c)
}

// State returns the tracked columns of a whole row of table, as Map's next
// would hold them: the relay's record of a row it reads directly (for
// example when it first records the rows it watches). It returns nil when
// the table is not watched or tracks nothing.
func (m *Mapper) State(table string, row event.Row) event.Row {
	t := m.tables[table]
	if t == nil || len(t.track) == 0 {
		return nil
	}
	out := make(event.Row, len(t.track))
	for _, col := range t.track {
		if v, ok := row[col]; ok {
			out[col] = v
		}
	}
	return out
}

// UpdateCompanies keeps dir in step with a change of the companies table,
// given the next state that Map returned for it. It reports whether c was a
// change of the companies table; other changes leave dir as it was.
func (m *Mapper) UpdateCompanies(dir *Companies, c *event.Change, next event.Row) bool {
	if c.Table != m.companies {
		return false
	}
	key := m.tables[m.companies].key
	if len(key) != 1 {
		return true // a composite key cannot be a company id
	}
	idOf := func(row event.Row) (int64, bool) {
		v, ok := row[key[0]]
		if !ok {
			return 0, false
		}
		id, err := toInt64(v)
		return id, err == nil
	}
	switch c.Op {
	case event.Truncate:
		dir.Clear()
	case event.Delete:
		if id, ok := idOf(c.Old); ok {
			dir.Delete(id)
		}
	case event.Insert, event.Update:
		id, ok := idOf(c.New)
		if !ok {
			return true
		}
		if oldID, ok := idOf(c.Old); ok && oldID != id {
			dir.Delete(oldID)
		}
		dir.Set(id, next)
	}
	return true
}

func rowKey(cols []string, row event.Row) (string, bool) {
	if len(cols) == 1 {
		v, ok := row[cols[0]]
		if !ok || v == nil {
			return "", false
		}
		switch x := v.(type) {
		case string:
			return x, true
		case int64:
			return strconv.FormatInt(x, 10), true
		}
		b, err := marshal(v)
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	vals := make([]any, len(cols))
	for i, col := range cols {
		v, ok := row[col]
		if !ok || v == nil {
			return "", false
		}
		vals[i] = v
	}
	b, err := marshal(vals)
	if err != nil {
		return "", false
	}
	return string(b), true
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
