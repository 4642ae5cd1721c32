package cdc

// DecodeText converts a column value in PostgreSQL's text form, of the
// type with the given oid, into the value a change of that column carries
// (int64, float64, bool, string, JSON values, lists), exactly as the change
// feed decodes it. Test events use it to give their synthetic data the
// types real events have.
func DecodeText(oid uint32, text []byte) (any, error) {
	return newDecoder().value(oid, text)
}
