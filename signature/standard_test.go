package signature_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/internal/standardjs"
	"github.com/smartmaintenance/relay/signature"
)

// The test case the Standard Webhooks libraries share (their "sign function
// works" tests, in JavaScript, Go, Python and the others): key, message id,
// timestamp, payload and the signature each of them must produce.
const (
	specKey       = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specMsgID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specPayload   = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func specHeader(ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(signature.StandardIDHeader, specMsgID)
	h.Set(signature.StandardTimestampHeader, strconv.FormatInt(ts, 10))
	h.Set(signature.StandardSignatureHeader, sig)
	return h
}

func TestStandardSignSpecVector(t *testing.T) {
	key, err := signature.ParseStandardKey(specKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := signature.StandardSign(key, specMsgID, specTimestamp, []byte(specPayload)); got != specSignature {
		t.Errorf("StandardSign = %q, want the specification's %q", got, specSignature)
	}
	if got := signature.NewSigner(key).SignStandard(specMsgID, specTimestamp, []byte(specPayload)); got != specSignature {
		t.Errorf("Signer.SignStandard = %q, want %q", got, specSignature)
	}
	// Without the prefix the key reads the same, as in the libraries.
	if k2, err := signature.ParseStandardKey(strings.TrimPrefix(specKey, "whsec_")); err != nil || string(k2) != string(key) {
		t.Errorf("ParseStandardKey without prefix = %x, %v", k2, err)
	}
	// StandardKey is ParseStandardKey's inverse.
	if got := signature.StandardKey(key); got != specKey {
		t.Errorf("StandardKey = %q, want %q", got, specKey)
	}
	at := time.Unix(specTimestamp, 0)
	if err := signature.StandardVerifyAt(key, []byte(specPayload), specHeader(specTimestamp, specSignature), 0, at); err != nil {
		t.Errorf("StandardVerifyAt(spec vector) = %v", err)
	}
}

// TestStandardVerifyCases follows the libraries' verification tests.
func TestStandardVerifyCases(t *testing.T) {
	key, _ := signature.ParseStandardKey(specKey)
	body := []byte(specPayload)
	now := time.Unix(1700000000, 0)
	ts := now.Unix()
	valid := signature.StandardSign(key, specMsgID, ts, body)
	const other = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
	for _, tc := range []struct {
		name   string
		header http.Header
		body   []byte
		key    []byte
		want   error
	}{
		{"valid", specHeader(ts, valid), body, key, nil},
		{"multi signature", specHeader(ts, strings.Join([]string{other, "v2," + valid[3:], valid, other}, " ")), body, key, nil},
		{"missing id", func() http.Header { h := specHeader(ts, valid); h.Del("webhook-id"); return h }(), body, key, signature.ErrNoID},
		{"missing timestamp", func() http.Header { h := specHeader(ts, valid); h.Del("webhook-timestamp"); return h }(), body, key, signature.ErrTimestamp},
		{"timestamp not a number", func() http.Header { h := specHeader(ts, valid); h.Set("webhook-timestamp", "hello"); return h }(), body, key, signature.ErrTimestamp},
		{"missing signature", specHeader(ts, ""), body, key, signature.ErrNoSignature},
		{"invalid signature", specHeader(ts, other), body, key, signature.ErrMismatch},
		{"partial signature", specHeader(ts, valid[:8]), body, key, signature.ErrMismatch},
		{"only the version", specHeader(ts, "v1,"), body, key, signature.ErrMismatch},
		{"another version's signature", specHeader(ts, "v2,"+valid[3:]), body, key, signature.ErrMismatch},
		{"altered body", specHeader(ts, valid), []byte(`{"test": 2432232315}`), key, signature.ErrMismatch},
		{"other key", specHeader(ts, valid), body, []byte("another key"), signature.ErrMismatch},
		{"empty key", specHeader(ts, valid), body, nil, signature.ErrEmptySecret},
		{"old timestamp", specHeader(ts-301, signature.StandardSign(key, specMsgID, ts-301, body)), body, key, signature.ErrTimestamp},
		{"new timestamp", specHeader(ts+301, signature.StandardSign(key, specMsgID, ts+301, body)), body, key, signature.ErrTimestamp},
		{"old but within tolerance", specHeader(ts-299, signature.StandardSign(key, specMsgID, ts-299, body)), body, key, nil},
	} {
		err := signature.StandardVerifyAt(tc.key, tc.body, tc.header, 0, now)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: StandardVerifyAt = %v, want %v", tc.name, err, tc.want)
		}
	}
	// The error says which way the timestamp is off.
	for _, tc := range []struct {
		off  int64
		want string
	}{{-301, "5m1s old"}, {+301, "5m1s in the future"}} {
		h := specHeader(ts+tc.off, signature.StandardSign(key, specMsgID, ts+tc.off, body))
		if err := signature.StandardVerifyAt(key, body, h, 0, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("timestamp %+ds: %v, want it to say %q", tc.off, err, tc.want)
		}
	}
	// A wider tolerance accepts an older request.
	old := specHeader(ts-3600, signature.StandardSign(key, specMsgID, ts-3600, body))
	if err := signature.StandardVerifyAt(key, body, old, 2*time.Hour, now); err != nil {
		t.Errorf("tolerance 2h: %v", err)
	}
}

func TestParseStandardKeyRefusesGarbage(t *testing.T) {
	for _, k := range []string{"whsec_", "whsec_not base64!", ""} {
		if _, err := signature.ParseStandardKey(k); err == nil {
			t.Errorf("ParseStandardKey(%q) = nil error", k)
		}
	}
}

// TestStandardAgainstNodeLibrary checks signatures both ways against the
// standardwebhooks library from npm: it verifies what StandardSign makes
// (from secrets as the relay holds them, in their whsec_ form) and signs
// what StandardVerify must accept, the specification's case among them.
func TestStandardAgainstNodeLibrary(t *testing.T) {
	for _, secret := range []string{"whsec_3q2-7wAAx_Vz0RkqE9b1mYcJtL8nPoUaS4dGhIjKlMn", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "s3cr3t-0123456789abcdef", "ünïcødé-secret-with-ß-and-€", "It's a Secret to Everybody"} {
		key := []byte(secret)
		now := time.Now().Unix()
		bodies := [][]byte{[]byte(specPayload), {}, []byte(`{"event":"task.completed","data":{"note":"Pump 3 — überholt ✓"}}` + "\n")}
		var reqs []standardjs.Request
		var msgs []standardjs.Sign
		for i, b := range bodies {
			id := "0191d2c4-6c52-7d1e-8f00-00000000000" + strconv.Itoa(i)
			reqs = append(reqs, standardjs.Request{Body: b, Header: func() http.Header {
				h := http.Header{}
				h.Set(signature.StandardIDHeader, id)
				h.Set(signature.StandardTimestampHeader, strconv.FormatInt(now, 10))
				h.Set(signature.StandardSignatureHeader, signature.StandardSign(key, id, now, b))
				return h
			}()})
			msgs = append(msgs, standardjs.Sign{ID: id, TS: now, Body: b})
		}
		// One the library must refuse: signed with another secret.
		bad := http.Header{}
		bad.Set(signature.StandardIDHeader, "x")
		bad.Set(signature.StandardTimestampHeader, strconv.FormatInt(now, 10))
		bad.Set(signature.StandardSignatureHeader, signature.StandardSign([]byte("another secret entirely"), "x", now, nil))
		reqs = append(reqs, standardjs.Request{Body: nil, Header: bad})
		msgs = append(msgs, standardjs.Sign{ID: specMsgID, TS: specTimestamp, Body: []byte(specPayload)})

		verified, signed := standardjs.Run(t, signature.StandardKey(key), reqs, msgs)
		for i := range bodies {
			if verified[i] != "" {
				t.Errorf("secret %q, body %d: the library refuses StandardSign's signature: %s", secret, i, verified[i])
			}
			if err := signature.StandardVerify(key, bodies[i], specHeaderFor(msgs[i].ID, now, signed[i]), 0); err != nil {
				t.Errorf("secret %q, body %d: StandardVerify refuses the library's signature %q: %v", secret, i, signed[i], err)
			}
		}
		if verified[len(bodies)] == "" {
			t.Errorf("secret %q: the library accepts a signature made with another secret", secret)
		}
	}
	_, signed := standardjs.Run(t, specKey, nil, []standardjs.Sign{{ID: specMsgID, TS: specTimestamp, Body: []byte(specPayload)}})
	if signed[0] != specSignature {
		t.Errorf("the library signs the specification's case as %q, want %q", signed[0], specSignature)
	}
}

func specHeaderFor(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(signature.StandardIDHeader, id)
	h.Set(signature.StandardTimestampHeader, strconv.FormatInt(ts, 10))
	h.Set(signature.StandardSignatureHeader, sig)
	return h
}

func TestVerifyAny(t *testing.T) {
	body := []byte(`{"event":"task.completed"}`)
	oldS, newS := []byte("old-secret-0123456789"), []byte("new-secret-0123456789")
	h := http.Header{}
	h.Set(signature.Header, signature.Sign(newS, body))
	h.Set(signature.PreviousHeader, signature.Sign(oldS, body))
	for _, secrets := range [][][]byte{{oldS}, {newS}, {oldS, newS}} {
		if err := signature.VerifyAny(secrets, body, h); err != nil {
			t.Errorf("VerifyAny(%q) = %v", secrets, err)
		}
	}
	if err := signature.VerifyAny([][]byte{[]byte("third-secret-012345")}, body, h); !errors.Is(err, signature.ErrMismatch) {
		t.Errorf("VerifyAny(other secret) = %v, want ErrMismatch", err)
	}
	h.Del(signature.PreviousHeader)
	if err := signature.VerifyAny([][]byte{oldS}, body, h); !errors.Is(err, signature.ErrMismatch) {
		t.Errorf("VerifyAny(old secret, no previous header) = %v, want ErrMismatch", err)
	}
}

// docCase is a request for a documented Node example, and whether the
// example must accept it.
type docCase struct {
	Name    string            `json:"name"`
	Key     string            `json:"key,omitempty"`
	Secrets []string          `json:"secrets,omitempty"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers"`
	Want    bool              `json:"want"`
}

// runDocNode runs a documented Node block with a harness that calls fn on
// every case, in a directory where the standardwebhooks library resolves.
func runDocNode(t *testing.T, block, call string, cases []docCase) {
	t.Helper()
	dir := standardjs.Dir(t)
	input, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(t.TempDir(), "cases.json")
	if err := os.WriteFile(in, input, 0o600); err != nil {
		t.Fatal(err)
	}
	script := block + `
const cases = JSON.parse(require("node:fs").readFileSync(process.argv[2], "utf8"));
let bad = 0;
for (const c of cases) {
  const got = ` + call + `;
  if (got !== c.want) { console.log(c.name + ": got " + got + ", want " + c.want); bad++; }
}
process.exit(bad ? 1 : 0);
`
	path := filepath.Join(t.TempDir(), "example.js")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", path, in)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the documented example disagrees: %v\n%s", err, out)
	}
}

func stdHeaders(id string, ts int64, sigs ...string) map[string]string {
	return map[string]string{"webhook-id": id, "webhook-timestamp": strconv.FormatInt(ts, 10),
		"webhook-signature": strings.Join(sigs, " "), "content-type": "application/json"}
}

// TestDocStandardNodeExample runs docs/SIGNATURES.md's Standard Webhooks
// Node example (the official library) on requests signed as the relay
// signs them: one secret, two during a rotation, a stale timestamp.
func TestDocStandardNodeExample(t *testing.T) {
	oldS, newS := []byte("whsec_oldoldoldoldoldoldold-_0123"), []byte("new-secret-0123456789")
	body := `{"event":"task.completed","data":{"task_id":12345}}`
	now := time.Now().Unix()
	id := "0191d2c4-6c52-7d1e-8f00-000000000001"
	sNew := signature.StandardSign(newS, id, now, []byte(body))
	sOld := signature.StandardSign(oldS, id, now, []byte(body))
	stale := signature.StandardSign(newS, id, now-600, []byte(body))
	cases := []docCase{
		{Name: "new key, one signature", Key: signature.StandardKey(newS), Body: body, Headers: stdHeaders(id, now, sNew), Want: true},
		{Name: "new key, window", Key: signature.StandardKey(newS), Body: body, Headers: stdHeaders(id, now, sNew, sOld), Want: true},
		{Name: "old key, window", Key: signature.StandardKey(oldS), Body: body, Headers: stdHeaders(id, now, sNew, sOld), Want: true},
		{Name: "old key, after the window", Key: signature.StandardKey(oldS), Body: body, Headers: stdHeaders(id, now, sNew), Want: false},
		{Name: "stale timestamp", Key: signature.StandardKey(newS), Body: body, Headers: stdHeaders(id, now-600, stale), Want: false},
		{Name: "altered body", Key: signature.StandardKey(newS), Body: body + " ", Headers: stdHeaders(id, now, sNew), Want: false},
	}
	runDocNode(t, docBlockAfter(t, "<!-- standard-test: node -->"), "verifyStandard(c.key, Buffer.from(c.body, \"utf8\"), c.headers)", cases)
}

// TestDocRotationNodeExample runs docs/SIGNATURES.md's receiver that
// accepts either signature, on requests as the relay sends them during a
// rotation's window and after it.
func TestDocRotationNodeExample(t *testing.T) {
	oldS, newS := "old-secret-0123456789", "new-secret-0123456789"
	body := `{"event":"task.completed","data":{"note":"überholt"}}`
	window := map[string]string{"x-smtm-signature": signature.Sign([]byte(newS), []byte(body)),
		"x-smtm-signature-previous": signature.Sign([]byte(oldS), []byte(body))}
	after := map[string]string{"x-smtm-signature": signature.Sign([]byte(newS), []byte(body))}
	cases := []docCase{
		{Name: "window, old secret", Secrets: []string{oldS}, Body: body, Headers: window, Want: true},
		{Name: "window, new secret", Secrets: []string{newS}, Body: body, Headers: window, Want: true},
		{Name: "window, both", Secrets: []string{oldS, newS}, Body: body, Headers: window, Want: true},
		{Name: "window, another secret", Secrets: []string{"third-secret-0123456"}, Body: body, Headers: window, Want: false},
		{Name: "after, old secret", Secrets: []string{oldS}, Body: body, Headers: after, Want: false},
		{Name: "after, both", Secrets: []string{oldS, newS}, Body: body, Headers: after, Want: true},
		{Name: "altered body", Secrets: []string{oldS, newS}, Body: body + "\n", Headers: window, Want: false},
		{Name: "no secrets", Secrets: []string{""}, Body: body, Headers: window, Want: false},
	}
	runDocNode(t, docBlockAfter(t, "<!-- standard-test: rotation-node -->"), "verifyEither(c.secrets, Buffer.from(c.body, \"utf8\"), c.headers)", cases)
}
