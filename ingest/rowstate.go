// The row state the ingester keeps in memory (known): read from the store
// when a change needs a row's prior state, and bounded (forget).

package ingest

import (
	"context"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// maxKnownRows bounds the row states the ingester keeps in memory.
const maxKnownRows = 20_000

// prior returns the key of the recorded state each pending change's row
// had before the change ("" for inserts and rows without state), and makes
// sure that every such state is known: what is not in memory is read from
// the store in one query per table.
func (in *Ingester) prior(ctx context.Context) ([]string, error) {
	keys, missing := in.priorKeys()
	if len(missing) > 0 {
		// Nothing buffered or in a write in flight is missing from
		// memory (forget keeps their rows), so the read need not see
		// them. It goes through the open store transaction, if
		// there is one, for what was written into it and then forgotten;
		// else on its own, so that the group may still be written in
		// flight (launch).
		got := make(map[string]map[string]event.Row, len(missing))
		for table, ks := range missing {
			var rows map[string]event.Row
			var err error
			if in.w != nil {
				rows, err = in.w.RowState(ctx, table, ks)
			} else {
				rows, err = in.st.RowState(ctx, in.opts.Slot, table, ks)
			}
			if err != nil {
				return nil, err
			}
			got[table] = rows
		}
		in.learn(missing, got)
	}
	return keys, nil
}

// priorKeys returns the key of the recorded state each pending change's
// row had before the change ("" for inserts and rows without state), and
// the keys of those states that are not in memory, by table.
func (in *Ingester) priorKeys() ([]string, map[string][]string) {
	keys := make([]string, len(in.pending))
	var missing map[string][]string
	for i, c := range in.pending {
		// An inserted row has no prior state to read (the mapper's old is
		// empty for inserts).
		if c.Op == event.Truncate || c.Op == event.Insert || len(in.specs[c.Table].Tracked) == 0 {
			continue
		}
		k, ok := in.m.PriorKey(c)
		if !ok {
			continue
		}
		keys[i] = k
		if _, ok := in.known[c.Table][k]; !ok {
			if missing == nil {
				missing = map[string][]string{}
			}
			missing[c.Table] = append(missing[c.Table], k)
		}
	}
	return keys, missing
}

// learn keeps the state read for the missing keys; a key the store has no
// state for is known to have none.
func (in *Ingester) learn(missing map[string][]string, got map[string]map[string]event.Row) {
	for table, ks := range missing {
		known := in.knownTable(table)
		for _, k := range ks {
			known[k] = got[table][k] // nil: the store has no state for it
		}
	}
}

func (in *Ingester) knownTable(table string) map[string]event.Row {
	if in.known == nil {
		in.known = map[string]map[string]event.Row{}
	}
	t := in.known[table]
	if t == nil {
		t = map[string]event.Row{}
		in.known[table] = t
	}
	return t
}

// forget bounds the row states kept in memory. Call it only when nothing is
// pending: everything known is then in the store transaction or in the
// buffered row state changes, so any of it but the buffered rows and those
// of the writes in flight may be dropped (map order picks which at
// random) and read again when needed.
func (in *Ingester) forget() {
	if len(in.pending) > 0 {
		return
	}
	total := 0
	for _, t := range in.known {
		total += len(t)
	}
	if total <= in.maxKnown {
		return
	}
	type row struct{ table, key string }
	// The buffered rows, and those of the writes in flight: the store
	// does not have their state yet.
	var buffered map[row]bool
	keep := func(states []store.StateRow) {
		if buffered == nil {
			buffered = map[row]bool{}
		}
		for _, st := range states {
			buffered[row{st.Table, st.Key}] = true
		}
	}
	keep(in.states)
	for _, fl := range in.flights {
		keep(fl.batch.States)
	}
	for table, t := range in.known {
		if total <= in.maxKnown {
			return
		}
		for k := range t {
			if buffered[row{table, k}] {
				continue
			}
			delete(t, k)
			total--
			if total <= in.maxKnown*3/4 {
				break
			}
		}
		if len(t) == 0 {
			delete(in.known, table)
		}
	}
}
