package console

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
)

// TestVisibleControls: every control (C0 but tab and line breaks, DEL, C1)
// and every Unicode bidirectional control is shown visibly: C0 and DEL as
// their pictures, C1 and bidi controls as their code point; other text,
// non-ASCII letters, joiners and invalid UTF-8 included, is kept.
func TestVisibleControls(t *testing.T) {
	cases := map[string]string{
		"\x1b[31mred\x00\x7f":                    "␛[31mred␀␡",
		"csi\u009b31m":                           `csi\u009b31m`,
		"invoice\u202egnp.exe":                   `invoice\u202egnp.exe`,
		"\u2066isolate\u2069 \u061c\u200e\u200f": `\u2066isolate\u2069 \u061c\u200e\u200f`,
		"tab\tand\r\nlines":                      "tab\tand\r\nlines",
		"Größe — 東京 · 👩\u200d🔧 \u00a0x":          "Größe — 東京 · 👩\u200d🔧 \u00a0x",
		"bad \xff\xc2 utf8":                      "bad \xff\xc2 utf8",
	}
	for r := rune(0x80); r <= 0x9f; r++ {
		cases["C1 "+string(r)] = fmt.Sprintf(`C1 \u%04x`, r)
	}
	for _, r := range []rune{0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069} {
		cases["bidi "+string(r)+"x"] = fmt.Sprintf(`bidi \u%04xx`, r)
	}
	for in, want := range cases {
		if got := string(visibleControls([]byte(in))); got != want {
			t.Errorf("visibleControls(%+q) = %+q, want %+q", in, got, want)
		}
	}
	// hidden agrees with Unicode: controls but tab and line breaks, and
	// Bidi_Control.
	for r := rune(0); r < 0x3000; r++ {
		want := unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' || unicode.Is(unicode.Bidi_Control, r)
		if hidden(r) != want {
			t.Errorf("hidden(%U) = %v", r, !want)
		}
	}
	page := []byte(strings.Repeat("<p>Webhook “CMMS” — 200 · ok</p>\n", 100))
	if got := visibleControls(page); &got[0] != &page[0] {
		t.Error("a page without controls was copied")
	}
}
