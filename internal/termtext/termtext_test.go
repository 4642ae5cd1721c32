package termtext

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

func TestSafe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SAP-PM bridge", "SAP-PM bridge"},
		{"Größe Prüfstand 東京", "Größe Prüfstand 東京"},
		{"red\x1b[31mtext\x1b[0m", `red\x1b[31mtext\x1b[0m`},
		{"a\nb\r\tc", `a\nb\r\tc`},
		{"bell\a del\x7f nul\x00", `bell\x07 del\x7f nul\x00`},
		{"csi\u009b31m", `csi\u009b31m`},
		{"bidi \u202eevil", `bidi \u202eevil`},
		{"bad \xff utf8", `bad \xff utf8`},
		{`back\slash`, `back\slash`},
	} {
		if got := Safe(tc.in); got != tc.want {
			t.Errorf("Safe(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestJSON: JSON as encoding/json writes it, with a C1 control, bidi
// overrides and isolates, DEL and a tag character raw in its strings,
// comes out with each escaped, as valid JSON of the same values; printable
// text, indentation and JSON without such characters are kept as they are.
func TestJSON(t *testing.T) {
	values := map[string]any{
		"snippet": "csi\u009b31m red \x1b[0m",
		"name":    "invoice\u202egnp.exe \u2066x\u2069 \u061c\u200e\u200f",
		"del":     "a\x7fb",
		"tag":     "flag\U000e0001",
		"text":    "Größe 東京 😀 — \"quoted\" \\ back",
	}
	raw, err := json.MarshalIndent(values, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got := JSON(raw)
	if !json.Valid(got) {
		t.Fatalf("not valid JSON:\n%s", got)
	}
	for i, r := range string(got) {
		if r != '\n' && !printable(r) {
			t.Errorf("raw %U at byte %d:\n%s", r, i, got)
		}
	}
	for _, want := range []string{`csi\u009b31m red \u001b[0m`, `invoice\u202egnp.exe \u2066x\u2069 \u061c\u200e\u200f`,
		`a\u007fb`, `flag\udb40\udc01`, `Größe 東京 😀 — \"quoted\" \\ back`, "{\n  \""} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("want %s in:\n%s", want, got)
		}
	}
	var back map[string]any
	if err := json.Unmarshal(got, &back); err != nil || !reflect.DeepEqual(back, values) {
		t.Errorf("values changed: %q, %v", back, err)
	}
	// Invalid UTF-8 reads as U+FFFD, as a JSON decoder reads it.
	if got := string(JSON([]byte("{\"a\": \"x\xffy\"}"))); got != `{"a": "x\ufffdy"}` {
		t.Errorf("invalid UTF-8: %s", got)
	}
	plain := []byte("{\n\t\"ok\": true\r\n}")
	if got := JSON(plain); &got[0] != &plain[0] {
		t.Errorf("plain JSON was copied")
	}
}
