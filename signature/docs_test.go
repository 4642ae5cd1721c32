package signature_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// docBlock returns the fenced code block that follows the line
// "<!-- vectors-test: name -->" in docs/SIGNATURES.md.
func docBlock(t *testing.T, name string) string {
	t.Helper()
	return docBlockAfter(t, "<!-- vectors-test: "+name+" -->")
}

// docBlockAfter returns the fenced code block that follows the line marker
// in docs/SIGNATURES.md.
func docBlockAfter(t *testing.T, marker string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "docs", "SIGNATURES.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		block          strings.Builder
		marked, inside bool
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == marker:
			marked = true
		case marked && !inside && strings.HasPrefix(line, "```"):
			inside = true
		case inside && line == "```":
			return block.String()
		case inside:
			block.WriteString(line + "\n")
		}
	}
	t.Fatalf("docs/SIGNATURES.md: no code block after %q", marker)
	return ""
}

func vectorsPath(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runScript writes the documented function plus a harness that checks every
// vector, and runs it with the given interpreter.
func runScript(t *testing.T, interpreter, ext, code string) {
	t.Helper()
	path, err := exec.LookPath(interpreter)
	if err != nil {
		t.Skipf("%s not on PATH", interpreter)
	}
	script := filepath.Join(t.TempDir(), "verify"+ext)
	if err := os.WriteFile(script, []byte(code), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, script, vectorsPath(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("%s example disagrees with the vectors: %v\n%s", interpreter, err, out)
	}
}

const nodeHarness = `
const vf = JSON.parse(require("node:fs").readFileSync(process.argv[2], "utf8"));
let bad = 0;
for (const v of vf.valid) {
  if (!verifySignature(v.secret, Buffer.from(v.body, "utf8"), v.signature)) {
    console.log("refused valid vector", v.name); bad++;
  }
}
for (const v of vf.invalid) {
  let ok;
  try { ok = verifySignature(v.secret, Buffer.from(v.body, "utf8"), v.signature); } catch (e) { ok = false; }
  if (ok) { console.log("accepted invalid vector", v.name); bad++; }
}
process.exit(bad ? 1 : 0);
`

const pythonHarness = `
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    vf = json.load(f)
bad = 0
for v in vf["valid"]:
    if not verify_signature(v["secret"].encode(), v["body"].encode(), v["signature"]):
        print("refused valid vector", v["name"]); bad += 1
for v in vf["invalid"]:
    try:
        ok = verify_signature(v["secret"].encode(), v["body"].encode(), v["signature"])
    except ValueError:
        ok = False
    if ok:
        print("accepted invalid vector", v["name"]); bad += 1
sys.exit(1 if bad else 0)
`

func TestDocNodeExample(t *testing.T) {
	runScript(t, "node", ".js", docBlock(t, "node")+nodeHarness)
}

func TestDocPythonExample(t *testing.T) {
	runScript(t, "python3", ".py", docBlock(t, "python")+pythonHarness)
}

func TestDocShellExample(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not on PATH")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("sh not on PATH")
	}
	code := docBlock(t, "sh")
	vf := loadVectors(t)
	check := func(v vector, want string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "body.json"), []byte(v.Body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sh, "-c", code)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SECRET="+v.Secret, "SIGNATURE="+v.Signature)
		out, _ := cmd.CombinedOutput()
		if got := strings.TrimSpace(string(out)); got != want {
			if want == "valid" || got == "valid" {
				t.Errorf("%s: shell example says %q, want %q", v.Name, got, want)
			}
		}
	}
	for _, v := range vf.Valid {
		check(v, "valid")
	}
	for _, v := range vf.Invalid {
		check(v, "INVALID")
	}
}
