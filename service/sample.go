package service

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/mapper"
)

// sampler gives test events their data: the event's rule evaluated on a
// synthetic row of its table, whose every column holds a stand-in of the
// column's type, decoded as the change feed decodes that type. Each data
// field thus has the JSON type a real event's field has (an integer for a
// bigint column, a boolean, an RFC 3339 string for a timestamptz, a string
// for a numeric, ...), for the default rules and custom ones alike.
type sampler struct {
	pool *pgxpool.Pool // the platform database
	m    *mapper.Mapper
}

// sampleColumn is what the sample needs to know of a column.
type sampleColumn struct {
	name     string
	oid      uint32 // the column's type, as the change feed names it
	base     uint32 // the base type of a domain, else oid
	category string // pg_type.typcategory of base
	// values are the labels of an enum type, or the values a CHECK (col IN
	// (...)) allows, in their order.
	values []string
	// elem and elemCategory are the element type of an array.
	elem         uint32
	elemCategory string
}

// checkValuesRE matches a CHECK constraint that lists a column's values,
// such as CHECK ((status = ANY (ARRAY['open'::text, 'assigned'::text]))),
// and literalRE each of its literals.
var (
	checkValuesRE = regexp.MustCompile(`^CHECK \(\(\(?"?[a-z_0-9]+"?\)?(?:::text)? = ANY \(\(?ARRAY\[(.*)\]`)
	literalRE     = regexp.MustCompile(`'((?:[^']|'')*)'`)
)

// allowedValues are the values a CHECK constraint's definition lists.
func allowedValues(check string) []string {
	m := checkValuesRE.FindStringSubmatch(check)
	if m == nil {
		return nil
	}
	var out []string
	for _, l := range literalRE.FindAllStringSubmatch(m[1], -1) {
		out = append(out, strings.ReplaceAll(l[1], "''", "'"))
	}
	return out
}

func (s sampler) data(ctx context.Context, eventType string, now time.Time) (json.RawMessage, error) {
	table, ok := s.m.RuleTable(eventType)
	if !ok {
		return nil, fmt.Errorf("no rule produces %q", eventType)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT a.attname, a.atttypid,
		       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
		       bt.typcategory::text, coalesce(et.oid, 0), coalesce(et.typcategory::text, ''),
		       coalesce((SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = a.atttypid), '{}'),
		       coalesce((SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k
		                 WHERE k.conrelid = c.oid AND k.contype = 'c' AND k.conkey = ARRAY[a.attnum] LIMIT 1), '')
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		JOIN pg_type t ON t.oid = a.atttypid
		JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END
		LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
		WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind IN ('r', 'p')
		ORDER BY a.attnum`, table)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", table, err)
	}
	var cols []sampleColumn
	var c sampleColumn
	var check string
	var labels []string
	_, err = pgx.ForEachRow(rows, []any{&c.name, &c.oid, &c.base, &c.category, &c.elem, &c.elemCategory, &labels, &check}, func() error {
		c.values = labels
		if len(c.values) == 0 {
			c.values = allowedValues(check)
		}
		cols = append(cols, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", table, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s not found", table)
	}
	base := make(event.Row, len(cols))
	for _, c := range cols {
		v, err := cdc.DecodeText(c.oid, []byte(sampleText(c, now)))
		if err != nil {
			return nil, fmt.Errorf("sample of %s.%s: %w", table, c.name, err)
		}
		base[c.name] = v
	}
	newRow := s.firing(eventType, cols, base)
	return s.m.SampleChange(eventType, newRow, base)
}

// firing returns a row that makes the rule of eventType fire for a change
// from base to it, so that a test event reads like a real one (a test
// task.completed has the status completed, a test user.deactivated an
// inactive user): base itself when the rule fires for it, else base with
// one column changed to another value its type or constraint allows (the
// other values of an enum or a CHECK list, false for a boolean, 1 for a
// number), the first that fires; base when none does.
func (s sampler) firing(eventType string, cols []sampleColumn, base event.Row) event.Row {
	if s.m.SampleFires(eventType, base, base) {
		return base
	}
	for _, c := range cols {
		var alts []string
		switch {
		case len(c.values) > 1:
			alts = c.values[1:]
		case c.category == "B":
			alts = []string{"f"}
		case c.category == "N":
			alts = []string{"1"}
		}
		for _, alt := range alts {
			v, err := cdc.DecodeText(c.oid, []byte(alt))
			if err != nil {
				continue
			}
			row := maps.Clone(base)
			row[c.name] = v
			if s.m.SampleFires(eventType, row, base) {
				return row
			}
		}
	}
	return base
}

// sampleText is a stand-in value of c's type in PostgreSQL's text form:
// integers and numerics 0, floats 0.5 (so that they read as a fraction in
// JSON), true, now for times, an allowed value where an enum or a CHECK
// constraint lists them, "test" for other text, and an array of one
// element.
func sampleText(c sampleColumn, now time.Time) string {
	if c.category == "A" && c.elem != 0 {
		e := sampleText(sampleColumn{name: c.name, oid: c.elem, base: c.elem, category: c.elemCategory}, now)
		return `{"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(e) + `"}`
	}
	if len(c.values) > 0 {
		return c.values[0]
	}
	switch c.base {
	case pgtype.TimestamptzOID:
		return now.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	case pgtype.TimestampOID:
		return now.UTC().Format("2006-01-02 15:04:05.999999")
	case pgtype.DateOID:
		return now.UTC().Format("2006-01-02")
	case pgtype.TimeOID:
		return now.UTC().Format("15:04:05")
	case pgtype.IntervalOID:
		return "00:00:00"
	case pgtype.UUIDOID:
		return "00000000-0000-0000-0000-000000000000"
	case pgtype.JSONOID, pgtype.JSONBOID:
		return "{}"
	case pgtype.Float4OID, pgtype.Float8OID:
		return "0.5"
	}
	switch c.category {
	case "N": // numeric types
		return "0"
	case "B":
		return "t"
	case "A":
		return "{}"
	}
	if c.name == "email" || strings.HasSuffix(c.name, "_email") {
		return "test@example.com"
	}
	return "test"
}
