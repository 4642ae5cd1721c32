// Package termtext makes text that others chose safe to print on an
// operator's terminal. Webhook names, URLs, response bodies and error
// messages come from tenants and receivers; printed raw, an ESC sequence
// recolours or rewrites the terminal and a newline or tab forges a row of a
// table. Safe escapes every such character so that what is printed is
// visibly what was stored.
package termtext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Safe returns s with control characters (C0, DEL, C1, tab and newline
// included), format characters such as bidirectional overrides, other
// non-printable runes and invalid UTF-8 escaped in Go's notation: "\x1b",
// "\n", "\t", "\u202e", "\xff". Printable text, spaces and non-ASCII
// letters are kept as they are.
func Safe(s string) string {
	if isSafe(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == ' ' || unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

// isSafe is the fast path: plain printable ASCII needs no copy.
func isSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// Strings applies Safe to each element.
func Strings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Safe(s)
	}
	return out
}
