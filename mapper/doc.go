// Package mapper turns row changes of the platform's tables into webhook
// events. It is pure: a change (and the relay's record of the row before it)
// goes in; event drafts with their payload bytes, and the next record of the
// row, come out. It does no I/O.
//
// What becomes an event is data: a list of rules (rules.yaml holds the
// defaults; docs/EVENTS.md is the catalogue), each naming an event type, a
// table, the operations it looks at, a condition and the payload's data
// fields as expressions (github.com/expr-lang/expr). New compiles them once.
//
// The platform keeps the default REPLICA IDENTITY, so an update carries the
// new row only. The relay therefore keeps its own record of the columns that
// rules compare ("prior state"): Tables says which columns those are, Map
// computes the next record, and the caller loads and stores it.
//
// Payloads follow the product contract:
//
//	{"event":"task.completed","timestamp":"2026-04-24T09:15:30.123456+07:00","company_id":1,"company_name":"PT Kahatex","data":{...}}
//
// with the timestamp, the source transaction's commit time to the
// microsecond, in the company's time zone. The same change, record and
// directory always give the same bytes.
//
// Files by concern: rules.go is the rule set as data (Rule, the defaults,
// Merge); compile.go turns it into a Mapper (New), with expr.go compiling
// one expression and finding the columns it reads; mapper.go is the Mapper
// and what it tells its caller (Tables, RowKey, State, UpdateCompanies);
// map.go derives a change's events (Map); payload.go writes their bytes;
// companies.go is the company directory; sample.go the data of test events;
// filter.go compiles and runs webhook filters (CompileFilter, Match).
package mapper
