package ingest

// SetMaxKnown bounds the row states in keeps in memory, so that tests can
// make it forget often with few rows.
func SetMaxKnown(in *Ingester, n int) { in.maxKnown = n }
