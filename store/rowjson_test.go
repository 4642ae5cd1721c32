package store

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"

	"github.com/smartmaintenance/relay/event"
)

// viaJSON is what the relay read before parseRow: encoding/json, then
// whole numbers as int64.
func viaJSON(data []byte) (event.Row, error) {
	var r event.Row
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return wholeNumbers(r), nil
}

func FuzzRowJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `null`, `[]`, `{"status": "open", "technician_id": 12, "company_id": 1}`,
		`{"a":1.5,"b":-0,"c":1e3,"d":-2.5E-3,"e":9007199254740993,"f":true,"g":false,"h":null}`,
		`{"a":"\u00e9\n","b":"é","c":{"x":1.0},"d":[1,2]}`, `{"a":1,"a":2}`, `{"a":01}`, `{"a":1.}`,
		`{"a":-}`, `{"a":1e}`, `{"a":1e400}`, `{"a":"x"} x`, `{"a" 1}`, `{"a":1,}`, `{"a":tru}`,
		"{\"a\":\"\x01\"}", `{"a":"<&>"}`, `{"a":1}{`, `{"a":nul}`, `{"a":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseRow(data)
		want, wantErr := viaJSON(data)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%q: parseRow error %v, encoding/json error %v", data, err, wantErr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: parseRow %#v, encoding/json %#v", data, got, want)
		}
		// What appendRow writes reads back the same, and as encoding/json's
		// own encoding does.
		enc, err := appendRow([]byte("prefix"), got)
		if err != nil {
			t.Fatalf("appendRow(%#v): %v", got, err)
		}
		back, err := viaJSON(enc[len("prefix"):])
		if err != nil {
			t.Fatalf("appendRow(%#v) wrote %q: %v", got, enc, err)
		}
		if !reflect.DeepEqual(back, got) {
			t.Fatalf("%#v written as %q reads back as %#v", got, enc, back)
		}
	})
}

func TestAppendRowValues(t *testing.T) {
	row := event.Row{"s": "plain", "u": "é\"\\\n<", "i": int64(-7), "f": 2.5, "b": true, "n": nil,
		"l": []any{int64(1), "x"}, "m": map[string]any{"k": "v"}, "big": 1e300, "tiny": 5e-324}
	enc, err := appendRow(nil, row)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseRow(enc)
	if err != nil {
		t.Fatalf("%s: %v", enc, err)
	}
	want, _ := viaJSON(enc)
	if !reflect.DeepEqual(got, want) || got["u"] != row["u"] || got["i"] != int64(-7) || got["f"] != 2.5 || got["big"] != 1e300 {
		t.Errorf("%s read back as %#v", enc, got)
	}
	flat := event.Row{"s": "plain", "i": int64(3), "f": 0.25, "b": false, "n": nil}
	enc, _ = appendRow(nil, flat)
	if r, ok := parseFlat(enc); !ok || !reflect.DeepEqual(r, flat) {
		t.Errorf("%s is not read directly: %#v, %v", enc, r, ok)
	}
	if _, err := appendRow(nil, event.Row{"f": math.NaN()}); err == nil {
		t.Error("NaN encoded")
	}
	if b, err := appendRow([]byte("keep"), event.Row{"f": math.Inf(1)}); err == nil || string(b) != "keep" {
		t.Errorf("an error leaves dst as it was: %q, %v", b, err)
	}
}

func BenchmarkRowJSON(b *testing.B) {
	row := event.Row{"status": "completed", "technician_id": int64(1234), "company_id": int64(1)}
	enc, _ := appendRow(nil, row)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = appendRow(buf[:0], row)
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = parseRow(enc)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			raw, _ := json.Marshal(row)
			_, _ = viaJSON(raw)
		}
	})
}
