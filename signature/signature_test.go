package signature_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-github/v66/github"

	"github.com/smartmaintenance/relay/signature"
)

type vector struct {
	Name      string `json:"name"`
	Note      string `json:"note"`
	Secret    string `json:"secret"`
	Body      string `json:"body"`
	Signature string `json:"signature"`
	Error     string `json:"error"`
}

type vectorFile struct {
	Description string   `json:"description"`
	Valid       []vector `json:"valid"`
	Invalid     []vector `json:"invalid"`
}

func loadVectors(t testing.TB) vectorFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vf); err != nil {
		t.Fatalf("decode vectors.json: %v", err)
	}
	if len(vf.Valid) == 0 || len(vf.Invalid) == 0 {
		t.Fatal("vectors.json: no vectors")
	}
	return vf
}

// errorsByName maps the "error" field of invalid vectors to the sentinels.
var errorsByName = map[string]error{
	"empty_secret": signature.ErrEmptySecret,
	"no_signature": signature.ErrNoSignature,
	"algorithm":    signature.ErrAlgorithm,
	"malformed":    signature.ErrMalformed,
	"mismatch":     signature.ErrMismatch,
}

func TestValidVectors(t *testing.T) {
	for _, v := range loadVectors(t).Valid {
		t.Run(v.Name, func(t *testing.T) {
			if got := signature.Sign([]byte(v.Secret), []byte(v.Body)); got != v.Signature {
				t.Errorf("Sign = %s, want %s", got, v.Signature)
			}
			// A Signer reuses its keyed hash: twice, to sign after a reset.
			signer := signature.NewSigner([]byte(v.Secret))
			for range 2 {
				if got := signer.Sign([]byte(v.Body)); got != v.Signature {
					t.Errorf("Signer.Sign = %s, want %s", got, v.Signature)
				}
			}
			if err := signature.Verify([]byte(v.Secret), []byte(v.Body), v.Signature); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestInvalidVectors(t *testing.T) {
	for _, v := range loadVectors(t).Invalid {
		t.Run(v.Name, func(t *testing.T) {
			want, ok := errorsByName[v.Error]
			if !ok {
				t.Fatalf("vector has unknown error %q", v.Error)
			}
			err := signature.Verify([]byte(v.Secret), []byte(v.Body), v.Signature)
			if !errors.Is(err, want) {
				t.Errorf("Verify = %v, want %v", err, want)
			}
		})
	}
}

// TestGitHubVerifierAcceptsVectors checks the vectors with a verifier written
// elsewhere for the same header format (GitHub's X-Hub-Signature-256).
func TestGitHubVerifierAcceptsVectors(t *testing.T) {
	for _, v := range loadVectors(t).Valid {
		if err := github.ValidateSignature(v.Signature, []byte(v.Body), []byte(v.Secret)); err != nil {
			t.Errorf("%s: github.ValidateSignature: %v", v.Name, err)
		}
	}
}

// TestOpenSSLAgrees recomputes each valid vector with the openssl command
// line, the way docs/SIGNATURES.md tells receivers to: body bytes from a file.
func TestOpenSSLAgrees(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH")
	}
	dir := t.TempDir()
	for _, v := range loadVectors(t).Valid {
		path := filepath.Join(dir, v.Name+".json")
		if err := os.WriteFile(path, []byte(v.Body), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(openssl, "dgst", "-sha256", "-hmac", v.Secret, path).Output()
		if err != nil {
			t.Fatalf("%s: openssl: %v", v.Name, err)
		}
		// "HMAC-SHA2-256(path)= <hex>" (OpenSSL 3) or "HMAC-SHA256(path)= <hex>".
		line := strings.TrimSpace(string(out))
		i := strings.LastIndex(line, "= ")
		if i < 0 {
			t.Fatalf("%s: unexpected openssl output %q", v.Name, line)
		}
		if got := signature.Prefix + line[i+2:]; got != v.Signature {
			t.Errorf("%s: openssl gives %s, vector says %s", v.Name, got, v.Signature)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	secret := []byte("0123456789abcdef")
	body := []byte(`{"event":"task.completed"}`)
	good := signature.Sign(secret, body)
	digest := strings.TrimPrefix(good, signature.Prefix)
	tests := []struct {
		name   string
		secret []byte
		header string
		want   error
	}{
		{"ok", secret, good, nil},
		{"nil secret", nil, good, signature.ErrEmptySecret},
		{"empty secret", []byte{}, signature.Sign(nil, body), signature.ErrEmptySecret},
		{"empty header", secret, "", signature.ErrNoSignature},
		{"sha1", secret, "sha1=" + digest[:40], signature.ErrAlgorithm},
		{"sha512", secret, "sha512=" + digest + digest, signature.ErrAlgorithm},
		{"upper-case prefix", secret, "SHA256=" + digest, signature.ErrAlgorithm},
		{"bare digest", secret, digest, signature.ErrMalformed},
		{"prefix only", secret, signature.Prefix, signature.ErrMalformed},
		{"too long", secret, good + "00", signature.ErrMalformed},
		{"too short", secret, good[:len(good)-1], signature.ErrMalformed},
		{"upper-case hex", secret, signature.Prefix + strings.ToUpper(digest), signature.ErrMalformed},
		{"not hex", secret, signature.Prefix + strings.Repeat("zz", 32), signature.ErrMalformed},
		{"space", secret, " " + good, signature.ErrMalformed},
		{"two signatures", secret, good + "," + good, signature.ErrMalformed},
		{"other secret", []byte("0123456789abcdeF"), good, signature.ErrMismatch},
		{"zero digest", secret, signature.Prefix + strings.Repeat("0", 64), signature.ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := signature.Verify(tt.secret, body, tt.header)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			for _, other := range errorsByName {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("Verify = %v, which also matches %v", err, other)
				}
			}
		})
	}
}

func TestSignFormat(t *testing.T) {
	got := signature.Sign([]byte("k"), nil)
	if !strings.HasPrefix(got, "sha256=") || len(got) != len("sha256=")+64 || strings.ToLower(got) != got {
		t.Fatalf("Sign = %q, want sha256= and 64 lowercase hex digits", got)
	}
}
