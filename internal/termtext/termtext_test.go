package termtext

import "testing"

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
