package message

import (
	"strings"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, U+2028 and U+2029 too (as encoding/json does), and
// invalid UTF-8 replaced by U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= ' ' && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendMrkdwn appends s as a JSON string of Slack mrkdwn text: &, < and >
// escaped as Slack asks, so that no value makes a link, a mention or a
// formatting control.
func appendMrkdwn(dst []byte, s string) []byte {
	return appendString(dst, escapeMrkdwn(s))
}

func escapeMrkdwn(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '&', '<', '>':
			n++
		}
	}
	if n == 0 {
		return s
	}
	out := make([]byte, 0, len(s)+4*n)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '&':
			out = append(out, "&amp;"...)
		case '<':
			out = append(out, "&lt;"...)
		case '>':
			out = append(out, "&gt;"...)
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}

// appendCardText appends s as a JSON string of an Adaptive Card's text,
// which Teams reads as Markdown and which has no escape that every client
// honours: a "](" gets a zero-width space between its two characters, so
// that no value makes a link whose text hides its address ("[Reset your
// password](https://...)"). Bold and italics are left as they come; they
// cannot send anyone anywhere.
func appendCardText(dst []byte, s string) []byte {
	return appendString(dst, strings.ReplaceAll(s, "](", "]\u200b("))
}
