package cdc

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/event"
)

// Snapshot reads tables as of a new slot's consistent point. Values are
// decoded exactly as the change feed decodes them, so a value read here
// compares equal to the same value arriving later in the stream.
type Snapshot struct {
	tx  pgx.Tx
	dec *decoder
}

// Scan calls fn for every row of table (schema public) with the given
// columns.
func (s *Snapshot) Scan(ctx context.Context, table string, columns []string, fn func(event.Row) error) error {
	ids := make([]string, len(columns))
	for i, c := range columns {
		ids[i] = pgx.Identifier{c}.Sanitize()
	}
	sql := fmt.Sprintf("SELECT %s FROM %s", strings.Join(ids, ", "), pgx.Identifier{"public", table}.Sanitize())
	// The simple protocol returns every value in its text form, the form
	// pgoutput sends.
	rows, err := s.tx.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	fields := rows.FieldDescriptions()
	for rows.Next() {
		raw := rows.RawValues()
		row := make(event.Row, len(raw))
		for i, b := range raw {
			if b == nil {
				row[fields[i].Name] = nil
				continue
			}
			v, err := s.dec.value(fields[i].DataTypeOID, b)
			if err != nil {
				return fmt.Errorf("read %s.%s: %w", table, fields[i].Name, err)
			}
			row[fields[i].Name] = v
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	return nil
}
