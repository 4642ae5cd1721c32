// Package signature signs and verifies SmartMaintenance webhook requests.
//
// Every webhook request whose endpoint has a secret carries the header
//
//	X-SMTM-Signature: sha256=<hex>
//
// where <hex> is the lowercase hexadecimal HMAC-SHA256 of the raw request
// body, keyed with the endpoint's secret. This is the same format GitHub uses
// for X-Hub-Signature-256, so verifiers written for GitHub accept it too.
//
// A receiver reads the body as bytes (before any JSON decoding), then calls
// [Verify] with the secret, those bytes and the header value. Verify compares
// in constant time and returns one of the sentinel errors below, so a
// receiver can log why a request was refused without leaking the expected
// value to the caller.
//
// Verify refuses an empty secret: an HMAC keyed with nothing proves nothing,
// since anyone can compute it.
//
// Requests may be delivered more than once (retries, manual re-fires): use
// the X-SMTM-Delivery header, which is the same for every attempt of one
// delivery, to drop duplicates.
//
// This package imports nothing but the standard library, so receivers can
// depend on it without pulling in the relay.
package signature

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Request headers set by the relay on every webhook request.
const (
	// Header carries "sha256=" followed by the hex HMAC-SHA256 of the body.
	// It is present only when the endpoint has a secret.
	Header = "X-SMTM-Signature"
	// DeliveryHeader carries the delivery id (a UUID). It is the same for
	// every attempt of one delivery, so receivers can use it as an
	// idempotency key.
	DeliveryHeader = "X-SMTM-Delivery"
	// EventHeader carries the event type, e.g. "task.completed".
	EventHeader = "X-SMTM-Event"
)

// Prefix precedes the hex digest in the signature header value.
const Prefix = "sha256="

// Errors returned by Verify. Each wrapped error carries detail; compare with
// errors.Is.
var (
	// ErrEmptySecret means Verify was called with an empty secret.
	ErrEmptySecret = errors.New("signature: empty secret")
	// ErrNoSignature means the header value is empty: the request is unsigned.
	ErrNoSignature = errors.New("signature: no signature")
	// ErrAlgorithm means the header names another algorithm, e.g. sha1= or
	// sha512=. Only sha256= is produced by the relay.
	ErrAlgorithm = errors.New("signature: unsupported algorithm")
	// ErrMalformed means the header is not "sha256=" followed by 64
	// lowercase hex digits.
	ErrMalformed = errors.New("signature: malformed")
	// ErrMismatch means the signature is well formed but does not match the
	// body and secret: the body was altered, the secret differs, or the
	// request was not sent by the relay.
	ErrMismatch = errors.New("signature: mismatch")
)

// Sign returns the header value for body: "sha256=" followed by the
// lowercase hex HMAC-SHA256 of body keyed with secret.
//
// Sign does not refuse an empty secret; the relay only signs for endpoints
// whose secret is set (and at least 16 bytes long).
func Sign(secret, body []byte) string {
	return Prefix + hex.EncodeToString(mac(secret, body))
}

// Verify reports whether header, the value of the X-SMTM-Signature header,
// is the signature of body under secret. It returns nil on success and an
// error wrapping ErrEmptySecret, ErrNoSignature, ErrAlgorithm, ErrMalformed
// or ErrMismatch otherwise. The comparison takes constant time.
//
// body must be the raw request body exactly as received: re-encoding parsed
// JSON changes the bytes and the signature with them.
func Verify(secret, body []byte, header string) error {
	if len(secret) == 0 {
		return ErrEmptySecret
	}
	if header == "" {
		return ErrNoSignature
	}
	hexDigest, ok := strings.CutPrefix(header, Prefix)
	if !ok {
		if alg, _, found := strings.Cut(header, "="); found && isAlgorithmName(alg) {
			return fmt.Errorf("%w %q; want %q", ErrAlgorithm, alg, strings.TrimSuffix(Prefix, "="))
		}
		return fmt.Errorf("%w: missing %q prefix", ErrMalformed, Prefix)
	}
	if len(hexDigest) != hex.EncodedLen(sha256.Size) {
		return fmt.Errorf("%w: %d hex digits, want %d", ErrMalformed, len(hexDigest), hex.EncodedLen(sha256.Size))
	}
	if !isLowerHex(hexDigest) {
		return fmt.Errorf("%w: not lowercase hex", ErrMalformed)
	}
	got, err := hex.DecodeString(hexDigest)
	if err != nil {
		return fmt.Errorf("%w: not hex", ErrMalformed)
	}
	if !hmac.Equal(got, mac(secret, body)) {
		return ErrMismatch
	}
	return nil
}

// A Signer signs with one secret, as Sign does. It keeps the hash keyed
// with the secret, so that a signature costs the hash of the body alone. It
// is safe for concurrent use.
type Signer struct {
	keyed sync.Pool // of hash.Hash keyed with the secret
}

// NewSigner returns a Signer for secret; it keeps a copy of secret.
func NewSigner(secret []byte) *Signer {
	key := bytes.Clone(secret)
	return &Signer{keyed: sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

// Sign returns the header value for body, equal to Sign(secret, body).
func (s *Signer) Sign(body []byte) string {
	h := s.keyed.Get().(hash.Hash)
	h.Reset()
	h.Write(body)
	var sum [sha256.Size]byte
	var out [len(Prefix) + 2*sha256.Size]byte
	copy(out[:], Prefix)
	hex.Encode(out[len(Prefix):], h.Sum(sum[:0]))
	s.keyed.Put(h)
	return string(out[:])
}

func mac(secret, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write(body)
	return h.Sum(nil)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isAlgorithmName reports whether s looks like a hash name such as "sha1"
// or "sha512", to tell another algorithm apart from garbage.
func isAlgorithmName(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}
