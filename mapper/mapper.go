package mapper

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

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
