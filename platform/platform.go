// Package platform holds the reference SmartMaintenance platform's schema
// and sample data (schema.sql, sample.sql) for the demo, the tests, the
// bench command and docker-compose.yml. The relay itself never creates or
// changes platform tables.
package platform

import _ "embed"

// Schema creates the platform's tables the relay watches.
//
//go:embed schema.sql
var Schema string

// Sample inserts two companies in different time zones with users and assets.
//
//go:embed sample.sql
var Sample string
