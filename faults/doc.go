// Package faults holds the relay's fault-injection suite. Its tests build
// the real relay binary, run it as a child process against real PostgreSQL
// servers (internal/pgtest) and real HTTP receivers, inject one fault per
// scenario (SIGKILL, database restarts, receiver outages and hangs, a huge
// transaction, WAL pressure, several relays, SIGTERM under load, bad input)
// and check what the receivers got, counted by X-SMTM-Delivery, against
// what the database changed. Each scenario logs its figures.
//
// By default (and with -short) the scenarios run smaller loads, so the
// suite is part of `go test ./...`; `make faults` (`go test ./faults -args
// -full`) runs the full sizes. docs/RELIABILITY.md explains
// each scenario and records the figures of the last full run.
package faults
