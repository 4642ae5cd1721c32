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
	"unicode/utf16"
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
		case printable(r):
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

// printable reports whether Safe keeps r as it is: letters, marks,
// numbers, punctuation, symbols and the ASCII space. Everything else
// (controls, format characters such as U+202E, other spaces, unassigned
// code points) can change how a terminal shows what follows, or be unseen.
func printable(r rune) bool { return r == ' ' || unicode.IsPrint(r) }

// JSON returns the JSON text b with every character that Safe escapes
// written as a JSON escape (\u009b, \u202e), so that printing it is as
// safe as printing Safe's text. encoding/json escapes C0 controls but
// writes DEL, C1 controls (U+009B starts a terminal sequence as ESC [
// does), bidirectional overrides and other unseen characters raw. Valid
// JSON holds them only inside strings, where the escape stands for the
// same character: the result is JSON of the same values, which jq reads as
// before. Tab, newline and carriage return are kept (outside strings they
// are JSON's whitespace; inside, valid JSON has them escaped already), and
// invalid UTF-8 becomes \ufffd, as JSON decoders read it.
func JSON(b []byte) []byte {
	if isSafeJSON(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, `\ufffd`...)
		case r == '\t' || r == '\n' || r == '\r' || printable(r):
			out = append(out, b[i:i+size]...)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r) // JSON escapes are UTF-16
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += size
	}
	return out
}

// isSafeJSON is JSON's fast path: printable ASCII and JSON's whitespace.
func isSafeJSON(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c >= 0x7f {
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
