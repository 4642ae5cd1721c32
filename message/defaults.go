package message

// Field kinds: how a data value is shown.
const (
	kindText  = ""      // as it is
	kindWords = "words" // underscores as spaces, first letter upper case: in_review -> In review
	kindTime  = "time"  // an RFC 3339 time, in the event's time zone
	kindRef   = "ref"   // an id: #42
)

// field is one data field shown beside the summary.
type field struct {
	label, key, kind string
}

// eventDefaults are an event type's default templates and fields.
type eventDefaults struct {
	summary, link string
	fields        []field
}

// defaults hold the templates of the admin guide's 11 event types. The
// first letter of every rendered summary is made upper case, so a template
// may start with a value ("critical repair request ...").
var defaults = map[string]eventDefaults{
	"task.assigned": {
		summary: `Task #{{.data.task_id}} assigned{{with .data.technician_id}} to technician #{{.}}{{end}}{{with .data.title}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/tasks/{{.data.task_id}}`,
		fields: []field{{"Priority", "priority", kindWords}, {"Status", "status", kindWords}, {"Technician", "technician_id", kindRef},
			{"Assigned by", "assigned_by", kindRef}, {"Asset", "asset_id", kindRef}, {"Due", "due_at", kindTime}},
	},
	"task.completed": {
		summary: `Task #{{.data.task_id}} completed{{with .data.title}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/tasks/{{.data.task_id}}`,
		fields: []field{{"Priority", "priority", kindWords}, {"Technician", "technician_id", kindRef},
			{"Asset", "asset_id", kindRef}, {"Completed", "completed_at", kindTime}},
	},
	"task.approved": {
		summary: `Task #{{.data.task_id}} approved{{with .data.title}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/tasks/{{.data.task_id}}`,
		fields: []field{{"Priority", "priority", kindWords}, {"Technician", "technician_id", kindRef},
			{"Reviewed by", "reviewed_by", kindRef}, {"Reviewed", "reviewed_at", kindTime}, {"Asset", "asset_id", kindRef}},
	},
	"task.rejected": {
		summary: `Task #{{.data.task_id}} rejected{{with .data.title}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/tasks/{{.data.task_id}}`,
		fields: []field{{"Reason", "rejection_reason", kindText}, {"Priority", "priority", kindWords},
			{"Technician", "technician_id", kindRef}, {"Reviewed by", "reviewed_by", kindRef},
			{"Reviewed", "reviewed_at", kindTime}, {"Asset", "asset_id", kindRef}},
	},
	"repair_request.created": {
		summary: `{{with .data.priority}}{{words .}} {{end}}repair request #{{.data.repair_request_id}} filed{{with .data.title}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/repair-requests/{{.data.repair_request_id}}`,
		fields: []field{{"Priority", "priority", kindWords}, {"Status", "status", kindWords},
			{"Requested by", "requested_by", kindRef}, {"Asset", "asset_id", kindRef}},
	},
	"repair_request.updated": {
		summary: `Repair request #{{.data.repair_request_id}}{{with .data.status}} is now {{words .}}{{end}}{{with .data.previous_status}} (was {{words .}}){{end}}{{with .data.title}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/repair-requests/{{.data.repair_request_id}}`,
		fields: []field{{"Status", "status", kindWords}, {"Previous status", "previous_status", kindWords},
			{"Priority", "priority", kindWords}, {"Updated by", "updated_by", kindRef}, {"Asset", "asset_id", kindRef}},
	},
	"shutdown.reported": {
		summary: `Shutdown #{{.data.shutdown_id}} reported{{with .data.asset_id}} on asset #{{.}}{{end}}{{with .data.reason}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/shutdowns/{{.data.shutdown_id}}`,
		fields: []field{{"Reason", "reason", kindText}, {"Status", "status", kindWords},
			{"Reported by", "reported_by", kindRef}, {"Asset", "asset_id", kindRef}, {"Started", "started_at", kindTime}},
	},
	"shutdown.resolved": {
		summary: `Shutdown #{{.data.shutdown_id}} resolved{{with .data.reason}}: {{.}}{{end}} ({{.company_name}})`,
		link:    `/shutdowns/{{.data.shutdown_id}}`,
		fields: []field{{"Resolution", "resolution", kindText}, {"Resolved by", "resolved_by", kindRef},
			{"Asset", "asset_id", kindRef}, {"Started", "started_at", kindTime}, {"Resolved", "resolved_at", kindTime}},
	},
	"user.created": {
		summary: `New user{{with .data.full_name}} {{.}}{{end}}{{with .data.role}} ({{words .}}){{end}} added ({{.company_name}})`,
		link:    `/users/{{.data.user_id}}`,
		fields: []field{{"Email", "email", kindText}, {"Role", "role", kindWords}, {"Active", "active", kindText},
			{"Created by", "created_by", kindRef}},
	},
	"user.deactivated": {
		summary: `User{{with .data.full_name}} {{.}}{{else}} #{{.data.user_id}}{{end}} deactivated ({{.company_name}})`,
		link:    `/users/{{.data.user_id}}`,
		fields: []field{{"Email", "email", kindText}, {"Role", "role", kindWords},
			{"Deactivated by", "deactivated_by", kindRef}, {"Deactivated", "deactivated_at", kindTime}},
	},
	"audit.exported": {
		summary: `Activity log exported{{with .data.format}} as {{upper .}}{{end}}{{with .data.row_count}}: {{.}} rows{{end}} ({{.company_name}})`,
		link:    `/activity-log`,
		fields: []field{{"Exported by", "exported_by", kindRef}, {"Format", "format", kindUpper}, {"Rows", "row_count", kindText},
			{"From", "range_from", kindTime}, {"To", "range_to", kindTime}},
	},
}

// kindUpper shows a value in upper case (xlsx -> XLSX).
const kindUpper = "upper"

// genericSummary is the summary of an event type without defaults (one a
// configured rule adds): its name in words, and the company.
const genericSummary = `{{with .event}}{{words (dots .)}}{{else}}event{{end}}{{with .company_name}} ({{.}}){{end}}`

// Events returns the event types with default templates.
func Events() []string {
	out := make([]string, 0, len(defaults))
	for e := range defaults {
		out = append(out, e)
	}
	return out
}
