// Package reference carries the reference SmartMaintenance platform schema
// and sample data (testdata/schema.sql, testdata/sample.sql) for the demo,
// the tests and the bench command. The relay itself never creates or
// changes platform tables.
package reference

import _ "embed"

// Schema creates the platform's tables the relay watches.
//
//go:embed testdata/schema.sql
var Schema string

// Sample inserts two companies in different time zones with users and assets.
//
//go:embed testdata/sample.sql
var Sample string
