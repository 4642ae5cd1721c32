package mapper

// Rule turns row changes of one table into one event type. Rules are data:
// a default set ships with the relay (rules.yaml) and config can replace or
// extend it.
type Rule struct {
	// Event is the event type, e.g. "task.completed".
	Event string `koanf:"event" json:"event" yaml:"event"`
	// Table is the watched table (unqualified name, schema public).
	Table string `koanf:"table" json:"table" yaml:"table"`
	// On lists the operations the rule looks at: insert, update, delete.
	// Empty means insert and update.
	On []string `koanf:"on" json:"on,omitempty" yaml:"on,omitempty"`
	// When is a boolean expression over new, old, op and table; empty means
	// always.
	When string `koanf:"when" json:"when,omitempty" yaml:"when,omitempty"`
	// Company is an expression giving the company id; empty means
	// new.company_id (old.company_id for deletes).
	Company string `koanf:"company" json:"company,omitempty" yaml:"company,omitempty"`
	// Data lists the payload's data fields in order, each a one-entry map
	// from field name to expression, e.g. [{task_id: new.id}, {status: new.status}].
	Data []map[string]string `koanf:"data" json:"data,omitempty" yaml:"data,omitempty"`
}
