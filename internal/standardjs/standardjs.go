// Package standardjs runs the Standard Webhooks reference library for
// JavaScript (the npm package standardwebhooks) with node, so that tests
// check the relay's Standard Webhooks signatures against an implementation
// that shares no code with package signature.
//
// The library is installed with npm once per machine into the user cache
// directory. Without node or npm the tests that need it skip, except in CI
// (CI set), where .ci/run installs them and their absence is a failure.
package standardjs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Version is the standardwebhooks release the tests run.
const Version = "1.3.0"

var (
	installOnce sync.Once
	installDir  string
	installErr  error
)

// need finds a program, or skips (fails in CI) without it.
func need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; in CI it is required (.ci/run installs the Debian packages nodejs and npm)", name)
	}
	t.Skipf("%s is not installed (Debian: apt-get install nodejs npm); skipping the check against the standardwebhooks library", name)
	return ""
}

// Dir returns a directory whose node_modules holds standardwebhooks at
// Version, installing it on first use.
func Dir(t testing.TB) string {
	t.Helper()
	need(t, "node")
	npm := need(t, "npm")
	installOnce.Do(func() { installDir, installErr = install(npm) })
	if installErr != nil {
		t.Fatalf("install standardwebhooks %s from npm: %v", Version, installErr)
	}
	return installDir
}

func install(npm string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "smtm-relay-tests", "standardwebhooks-"+Version)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks", "package.json")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	// Install beside it and rename: test binaries of several packages may
	// install at once, and none may see a half-installed library.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(npm, "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error",
		"--prefix", tmp, "standardwebhooks@"+Version)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks", "package.json")); statErr == nil {
			return dir, nil // another test binary was first
		}
		return "", err
	}
	return dir, nil
}

// Request is a received request to verify: its raw body and headers.
type Request struct {
	Body   []byte
	Header http.Header
}

// script verifies each request with new Webhook(key).verify(body, headers)
// and prints one line of JSON: per request "" or the library's error.
const script = `
const { Webhook } = require("standardwebhooks");
const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
const wh = new Webhook(input.key);
const out = input.requests.map((r) => {
  try {
    wh.verify(Buffer.from(r.body, "base64"), r.headers, { jsonParse: false });
    return "";
  } catch (e) {
    return String(e && e.message || e);
  }
});
const signed = (input.sign || []).map((s) => wh.sign(s.id, new Date(s.ts * 1000), Buffer.from(s.body, "base64")));
console.log(JSON.stringify({ verified: out, signed }));
`

// Sign is a message for the library to sign.
type Sign struct {
	ID   string `json:"id"`
	TS   int64  `json:"ts"`
	Body []byte `json:"body"`
}

// Run verifies reqs and signs msgs with the library, keyed with key (the
// whsec_ form). verified holds "" for each request that verifies, else the
// library's reason; signed holds the webhook-signature value of each msg.
func Run(t testing.TB, key string, reqs []Request, msgs []Sign) (verified, signed []string) {
	t.Helper()
	dir := Dir(t)
	type jsReq struct {
		Body    []byte            `json:"body"`
		Headers map[string]string `json:"headers"`
	}
	in := struct {
		Key      string  `json:"key"`
		Requests []jsReq `json:"requests"`
		Sign     []Sign  `json:"sign"`
	}{Key: key, Requests: []jsReq{}, Sign: msgs}
	for _, r := range reqs {
		h := map[string]string{}
		for k, v := range r.Header {
			if len(v) > 0 {
				h[k] = v[0]
			}
		}
		in.Requests = append(in.Requests, jsReq{Body: r.Body, Headers: h})
	}
	input, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "-e", script)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node standardwebhooks: %v\n%s", err, stderr.String())
	}
	var res struct {
		Verified []string `json:"verified"`
		Signed   []string `json:"signed"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node standardwebhooks: %v\n%s", err, out)
	}
	return res.Verified, res.Signed
}
