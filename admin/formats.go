package admin

import (
	"fmt"
	"strings"

	"github.com/smartmaintenance/relay/message"
)

// checkFormat checks the payload format a create or an update gives, if
// any: one of message.Formats (an empty one too is refused here, where the
// field is given on purpose; the config file reads "" as raw).
func checkFormat(format *string) []problem {
	if format == nil || message.Known(*format) {
		return nil
	}
	return []problem{{"format", fmt.Sprintf("%q is not a payload format; use one of %s", *format, strings.Join(message.Formats, ", "))}}
}

// Formats lists the payload formats a webhook can have, the default first.
func Formats() []string { return append([]string(nil), message.Formats...) }
