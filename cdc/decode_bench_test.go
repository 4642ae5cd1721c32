package cdc

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/smartmaintenance/relay/event"
)

// BenchmarkDecodeUpdate measures decoding one tasks-like update message,
// as it comes from the server, into a change.
func BenchmarkDecodeUpdate(b *testing.B) {
	d := newDecoder()
	d.relation(&pglogrepl.RelationMessage{RelationID: 1, Namespace: "public", RelationName: "tasks", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", DataType: pgtype.Int8OID, Flags: 1}, {Name: "company_id", DataType: pgtype.Int8OID},
		{Name: "title", DataType: pgtype.TextOID}, {Name: "status", DataType: pgtype.TextOID},
		{Name: "technician_id", DataType: pgtype.Int8OID}, {Name: "description", DataType: pgtype.TextOID},
		{Name: "updated_at", DataType: pgtype.TimestamptzOID},
	}})
	data := rowMsg('U', 1, []byte{'N'}, tupleData("12345", "1", "Replace drive belt", "completed", "42", "<toast>",
		"2026-04-24 02:15:30.123456+00"))
	tx := &event.Tx{CommitLSN: 1, CommitTime: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		msg, err := parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.change(msg.(rowMessage), tx, 0); err != nil {
			b.Fatal(err)
		}
	}
}
