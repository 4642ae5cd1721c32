package cdc

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/smartmaintenance/relay/event"
)

// BenchmarkDecodeUpdate measures decoding one tasks-like update into a change.
func BenchmarkDecodeUpdate(b *testing.B) {
	d := newDecoder()
	d.relation(&pglogrepl.RelationMessage{RelationID: 1, Namespace: "public", RelationName: "tasks", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", DataType: pgtype.Int8OID, Flags: 1}, {Name: "company_id", DataType: pgtype.Int8OID},
		{Name: "title", DataType: pgtype.TextOID}, {Name: "status", DataType: pgtype.TextOID},
		{Name: "technician_id", DataType: pgtype.Int8OID}, {Name: "description", DataType: pgtype.TextOID},
		{Name: "updated_at", DataType: pgtype.TimestamptzOID},
	}})
	text := func(s string) *pglogrepl.TupleDataColumn {
		return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Length: uint32(len(s)), Data: []byte(s)}
	}
	msg := &pglogrepl.UpdateMessage{RelationID: 1, NewTuple: &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		text("12345"), text("1"), text("Replace drive belt"), text("completed"), text("42"),
		{DataType: pglogrepl.TupleDataTypeToast}, text("2026-04-24 02:15:30.123456+00"),
	}}}
	tx := &event.Tx{CommitLSN: 1, CommitTime: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.change(msg, tx, 0); err != nil {
			b.Fatal(err)
		}
	}
}
