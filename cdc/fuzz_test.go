package cdc

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"slices"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/smartmaintenance/relay/event"
)

// fuzzColumns is the relation the fuzzer's row changes refer to: one column
// of each kind the decoder treats specially.
var fuzzColumns = []struct {
	name string
	oid  uint32
}{
	{"id", pgtype.Int8OID}, {"n", pgtype.Int4OID}, {"f", pgtype.Float8OID}, {"b", pgtype.BoolOID},
	{"t", pgtype.TextOID}, {"j", pgtype.JSONBOID}, {"ts", pgtype.TimestamptzOID}, {"lt", pgtype.TimestampOID},
	{"a", pgtype.Int4ArrayOID}, {"ta", pgtype.TextArrayOID}, {"num", pgtype.NumericOID}, {"u", pgtype.UUIDOID},
	{"d", pgtype.DateOID},
}

func relationMsg(id uint32) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, "public\x00items\x00"...)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(fuzzColumns)))
	for i, c := range fuzzColumns {
		flags := byte(0)
		if i == 0 {
			flags = 1
		}
		b = append(b, flags)
		b = append(b, c.name+"\x00"...)
		b = binary.BigEndian.AppendUint32(b, c.oid)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

func tupleData(vals ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		switch v {
		case "<null>":
			b = append(b, 'n')
		case "<toast>":
			b = append(b, 'u')
		default:
			b = append(b, 't')
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

func rowMsg(kind byte, id uint32, parts ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{kind}, id)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// FuzzDecode feeds arbitrary bytes through the pgoutput parser and the
// decoder, as the stream does: a first message (often a Relation) and a
// second one (often a row change). Nothing may panic or hang; a malformed
// message is an error.
func FuzzDecode(f *testing.F) {
	full := tupleData("1", "-7", "1.5e3", "t", "héllo", `{"a":[1,2,{"b":null}]}`, "2026-04-24 09:15:30.5+07",
		"2026-04-24 09:15:30", "{1,2,NULL}", `{"a b",c,NULL}`, "12.50", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "2026-04-24")
	odd := tupleData("x", "<null>", "nan", "maybe", "<toast>", "{bad json", "infinity", "-infinity", "{{1,2},{3}}", "{", "NaN", "z", "epoch")
	for _, seed := range [][2][]byte{
		{relationMsg(1), rowMsg('I', 1, []byte{'N'}, full)},
		{relationMsg(1), rowMsg('I', 1, []byte{'N'}, odd)},
		{relationMsg(1), rowMsg('U', 1, []byte{'K'}, tupleData("1"), []byte{'N'}, full)},
		{relationMsg(1), rowMsg('U', 1, []byte{'O'}, full, []byte{'N'}, odd)},
		{relationMsg(1), rowMsg('D', 1, []byte{'K'}, tupleData("1"))},
		{relationMsg(1), append(binary.BigEndian.AppendUint32([]byte{'T'}, 2), append([]byte{0}, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1), 9)...)...)},
		{relationMsg(1), binary.BigEndian.AppendUint32([]byte{'T'}, 0xffffffff)},
		{relationMsg(1), rowMsg('I', 1, []byte{'N'}, []byte{0, 1, 't', 0xff, 0xff, 0xff, 0xff})},
		{relationMsg(2), rowMsg('I', 1, []byte{'N'}, full)},
		{[]byte{'B'}, []byte{'C'}},
		{nil, nil},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		d := newDecoder()
		d.relation(mustRelation(t))
		tx := &event.Tx{CommitLSN: 1}
		for _, data := range [][]byte{first, second} {
			msg, err := parse(data)
			if err != nil {
				continue
			}
			switch m := msg.(type) {
			case *pglogrepl.RelationMessage:
				d.relation(m)
			case *pglogrepl.TruncateMessage:
				_, _ = d.truncated(m, tx, 0)
			case rowMessage:
				c, err := d.change(m, tx, 0)
				if err == nil && c != nil && c.Table == "" {
					t.Fatalf("change without a table: %+v", c)
				}
			}
		}
	})
}

func mustRelation(t *testing.T) *pglogrepl.RelationMessage {
	msg, err := parse(relationMsg(1))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*pglogrepl.RelationMessage)
}

// TestParseRefusesOversizedLengths: a corrupt count or length is refused
// before the decoder allocates what it declares.
func TestParseRefusesOversizedLengths(t *testing.T) {
	for name, data := range map[string][]byte{
		"truncate":    binary.BigEndian.AppendUint32([]byte{'T'}, 0x3fffffff),
		"column":      rowMsg('I', 1, []byte{'N'}, []byte{0, 1, 't', 0x7f, 0xff, 0xff, 0xff}),
		"old column":  rowMsg('U', 1, []byte{'O'}, []byte{0, 1, 't', 0x7f, 0xff, 0xff, 0xff}, []byte{'N'}, tupleData("1")),
		"empty":       nil,
		"bad marker":  rowMsg('I', 1, []byte{'X'}, tupleData("1")),
		"few columns": rowMsg('I', 1, []byte{'N'}, []byte{0xff, 0xff, 'n'}),
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := parse(data)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: parsed", name)
		}
		if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
			t.Errorf("%s: allocated %d bytes", name, grown)
		}
	}
}

// FuzzParseRowAgreesWithPglogrepl checks the in-place reading of row
// changes against pglogrepl's parser: whatever parseRow accepts, pglogrepl
// reads as the same relation, operation and columns.
func FuzzParseRowAgreesWithPglogrepl(f *testing.F) {
	f.Add(rowMsg('I', 1, []byte{'N'}, tupleData("1", "<null>", "<toast>", "x")))
	f.Add(rowMsg('U', 7, []byte{'K'}, tupleData("1"), []byte{'N'}, tupleData("1", "two")))
	f.Add(rowMsg('U', 7, []byte{'O'}, tupleData("1", "<null>"), []byte{'N'}, tupleData("1", "<toast>")))
	f.Add(rowMsg('U', 7, []byte{'N'}, tupleData("")))
	f.Add(rowMsg('D', 2, []byte{'K'}, tupleData("9")))
	f.Add(rowMsg('D', 2, []byte{'O'}, tupleData("9", "<null>")))
	f.Add(rowMsg('U', 3, []byte{'O'}, tupleData(), []byte{'N'}, tupleData()))
	f.Add(rowMsg('D', 3, []byte{'O'}, tupleData()))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		m, err := parseRow(data)
		if err != nil {
			return
		}
		theirs, err := pglogrepl.Parse(data)
		if err != nil && data[0] == 'I' && len(data) == 8 {
			// pglogrepl wants 8 bytes after an Insert's type, one more than
			// an Insert of a zero-column tuple takes. Such a tuple is legal
			// (a table with no columns; pgoutput sends it so, see
			// TestZeroColumnTable), and pglogrepl ignores bytes after the
			// tuple: read it padded by one byte.
			theirs, err = pglogrepl.Parse(append(data[:8:8], 0))
		}
		if err != nil {
			t.Fatalf("pglogrepl refuses what parseRow reads: %v", err)
		}
		var rel uint32
		var old, nu *pglogrepl.TupleData
		var oldKind uint8
		var op event.Op
		switch x := theirs.(type) {
		case *pglogrepl.InsertMessage:
			rel, nu, op = x.RelationID, x.Tuple, event.Insert
		case *pglogrepl.UpdateMessage:
			rel, old, nu, oldKind, op = x.RelationID, x.OldTuple, x.NewTuple, x.OldTupleType, event.Update
		case *pglogrepl.DeleteMessage:
			rel, old, oldKind, op = x.RelationID, x.OldTuple, x.OldTupleType, event.Delete
		default:
			t.Fatalf("pglogrepl reads %T", theirs)
		}
		if rel != m.relation || op != m.op || (old != nil) != (m.old != nil) || (nu != nil) != (m.new != nil) ||
			old != nil && oldKind != m.oldKind {
			t.Fatalf("parseRow %+v, pglogrepl %+v", m, theirs)
		}
		for _, pair := range []struct {
			ours   []byte
			theirs *pglogrepl.TupleData
		}{{m.old, old}, {m.new, nu}} {
			if pair.theirs == nil {
				continue
			}
			cols := tupleColumns(pair.ours)
			if len(cols) != len(pair.theirs.Columns) {
				t.Fatalf("%d columns, pglogrepl %d", len(cols), len(pair.theirs.Columns))
			}
			for i, c := range pair.theirs.Columns {
				if cols[i].kind != c.DataType || !bytes.Equal(cols[i].data, c.Data) {
					t.Fatalf("column %d: %q %q, pglogrepl %q %q", i, cols[i].kind, cols[i].data, c.DataType, c.Data)
				}
			}
		}
	})
}

type tupleColumn struct {
	kind byte
	data []byte
}

// tupleColumns lists the columns of a TupleData that parseRow checked.
func tupleColumns(t []byte) []tupleColumn {
	n := int(binary.BigEndian.Uint16(t))
	out := make([]tupleColumn, 0, n)
	pos := 2
	for range n {
		var c tupleColumn
		c.kind, c.data, pos = tupleColumnAt(t, pos)
		out = append(out, c)
	}
	return out
}

// FuzzBeginCommitAgreeWithPglogrepl checks the in-place reading of Begin
// and Commit messages against pglogrepl's parser: each accepts what the
// other does, and reads the same fields.
func FuzzBeginCommitAgreeWithPglogrepl(f *testing.F) {
	begin := []byte{'B', 0, 0, 0, 1, 0x2a, 0, 0, 0x10, 0, 2, 0xe5, 0x5a, 0x8e, 0x3b, 0x1f, 0x40, 0, 0, 0x03, 0xe9}
	commit := []byte{'C', 0, 0, 0, 0, 1, 0x2a, 0, 0, 0x10, 0, 0, 0, 1, 0x2a, 0, 0, 0x40, 0, 2, 0xe5, 0x5a, 0x8e, 0x3b, 0x1f, 0x40}
	f.Add(begin)
	f.Add(commit)
	f.Add(begin[:20])
	f.Add(commit[:25])
	f.Add(append(slices.Clone(commit), 7))
	f.Add([]byte{'B', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] != 'B' && data[0] != 'C' {
			return
		}
		theirs, theirErr := pglogrepl.Parse(data)
		if data[0] == 'B' {
			m, err := parseBegin(data)
			if (err != nil) != (theirErr != nil) {
				t.Fatalf("parseBegin: %v, pglogrepl: %v", err, theirErr)
			}
			if err != nil {
				return
			}
			b := theirs.(*pglogrepl.BeginMessage)
			if m.finalLSN != event.LSN(b.FinalLSN) || !m.commitTime.Equal(b.CommitTime) || m.commitTime.Location() != b.CommitTime.Location() || m.xid != b.Xid {
				t.Fatalf("parseBegin %+v, pglogrepl %+v", m, b)
			}
			return
		}
		end, err := parseCommit(data)
		if (err != nil) != (theirErr != nil) {
			t.Fatalf("parseCommit: %v, pglogrepl: %v", err, theirErr)
		}
		if err == nil && end != event.LSN(theirs.(*pglogrepl.CommitMessage).TransactionEndLSN) {
			t.Fatalf("parseCommit %s, pglogrepl %+v", end, theirs)
		}
	})
}

// FuzzISOTimestamp checks the decoder's fast road for timestamps against
// its parsing one: whatever isoTimestamp accepts, timestamp reads as the
// same value.
func FuzzISOTimestamp(f *testing.F) {
	for _, s := range []string{
		"2026-04-24 02:15:30+00", "2026-04-24 02:15:30.123456+00", "2026-04-24 02:15:30.1+00",
		"2028-02-29 23:59:59.999999+00", "2026-02-29 00:00:00+00", "0001-01-01 00:00:00+00",
		"9999-12-31 23:59:59.999999+00", "2026-04-24 02:15:30.10+00", "2026-04-24 02:15:30+05:30",
		"2026-04-24 02:15:30", "2026-04-24 02:15:30.000001", "infinity", "-infinity",
		"0099-12-31 00:00:00 BC", "10000-01-01 00:00:00", "2026-04-31 00:00:00", "2026-04-24 24:00:00",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	d := newDecoder()
	f.Fuzz(func(t *testing.T, s string, tz bool) {
		oid := uint32(pgtype.TimestampOID)
		if tz {
			oid = pgtype.TimestamptzOID
		}
		fast, ok := isoTimestamp(oid, []byte(s))
		if !ok {
			return
		}
		slow, err := d.timestamp(oid, []byte(s))
		if err != nil || slow != fast {
			t.Fatalf("isoTimestamp(%q) = %q; parsed: %q, %v", s, fast, slow, err)
		}
	})
}

// TestISOTimestampTakesPostgreSQLsForms checks that the fast road is taken
// for the forms PostgreSQL sends: a test that the fuzzer's property cannot
// make, since refusing everything would satisfy it.
func TestISOTimestampTakesPostgreSQLsForms(t *testing.T) {
	for _, c := range []struct {
		in   string
		tz   bool
		want string
	}{
		{"2026-04-24 02:15:30+00", true, "2026-04-24T02:15:30Z"},
		{"2026-04-24 02:15:30.123456+00", true, "2026-04-24T02:15:30.123456Z"},
		{"2028-02-29 23:59:59.5+00", true, "2028-02-29T23:59:59.5Z"},
		{"0099-12-31 00:00:00", false, "0099-12-31T00:00:00"},
		{"2026-04-24 02:15:30.000001", false, "2026-04-24T02:15:30.000001"},
	} {
		oid := uint32(pgtype.TimestampOID)
		if c.tz {
			oid = pgtype.TimestamptzOID
		}
		if got, ok := isoTimestamp(oid, []byte(c.in)); !ok || got != c.want {
			t.Errorf("isoTimestamp(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
	for _, in := range []string{"2026-02-29 00:00:00+00", "2026-04-24 02:15:30+05:30", "2026-04-24 02:15:30.10+00", "10000-01-01 00:00:00+00"} {
		if got, ok := isoTimestamp(pgtype.TimestamptzOID, []byte(in)); ok {
			t.Errorf("isoTimestamp(%q) = %q, want the parsing road", in, got)
		}
	}
}
