// Package secrets encrypts webhook secrets and header values at rest with
// AES-256-GCM.
//
// A sealed value is stored as "enc:v1:<key id>:<base64(nonce|ciphertext)>",
// where the key id is the first 8 hex digits of SHA-256 of the key, so that
// a value names the key that sealed it. A Box holds the current key, which
// seals, and any number of previous keys, which only open: rotating the key
// means configuring a new key and keeping the old one among the previous
// keys until every value is sealed again (the relay reseals every stored
// secret and header value at start, and any an admin saves).
//
// Secrets (Seal, Open) and header values (SealHeader, OpenHeader) are
// sealed for their purpose: a sealed secret copied into a header value, or
// the other way round, does not open, so whoever can write the table cannot
// make the relay send a secret in clear as a header.
//
// Without a key (a nil *Box) Seal stores the plain text and Open returns
// plain text unchanged; a sealed value then cannot be opened, and Open says
// so instead of returning the ciphertext.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeyBytes is the length of a key: AES-256.
const KeyBytes = 32

const prefix = "enc:v1:"

// Additional data binds ciphertexts to their purpose.
var (
	secretData = []byte("smtm-relay webhook secret v1")
	headerData = []byte("smtm-relay webhook header v1")
)

// ErrCannotOpen is wrapped when a sealed secret cannot be opened with the
// configured keys, ErrCannotOpenHeader when a sealed header value cannot.
var (
	ErrCannotOpen       = errors.New("cannot decrypt the webhook secret")
	ErrCannotOpenHeader = errors.New("cannot decrypt the header value")
)

// Box seals and opens secrets. A nil *Box stores plain text.
type Box struct {
	current string // key id
	aeads   map[string]cipher.AEAD
}

// ParseKey decodes a base64 (standard or URL alphabet, padded or not) key of
// KeyBytes bytes. The error never repeats the value.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeyBytes {
				return nil, fmt.Errorf("decodes to %d bytes; want %d (generate one with: openssl rand -base64 32)", len(b), KeyBytes)
			}
			return b, nil
		}
	}
	return nil, errors.New("is not base64 (generate one with: openssl rand -base64 32)")
}

// New returns a Box that seals with key and opens with key and previous.
func New(key []byte, previous ...[]byte) (*Box, error) {
	b := &Box{aeads: map[string]cipher.AEAD{}}
	for i, k := range append([][]byte{key}, previous...) {
		if len(k) != KeyBytes {
			return nil, fmt.Errorf("key %d: %d bytes, want %d", i, len(k), KeyBytes)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		id := KeyID(k)
		if i == 0 {
			b.current = id
		}
		if _, dup := b.aeads[id]; !dup {
			b.aeads[id] = aead
		}
	}
	return b, nil
}

// KeyID names a key without revealing it.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// Sealed reports whether a stored value is sealed.
func Sealed(stored string) bool { return strings.HasPrefix(stored, prefix) }

// Seal encrypts a webhook secret with the current key. "" stays "" (no
// secret). A nil Box returns plain unchanged.
func (b *Box) Seal(plain string) (string, error) { return b.seal(plain, secretData) }

// Open returns the plain text of a stored secret: a sealed value decrypted,
// anything else as it is (stored before a key was configured).
func (b *Box) Open(stored string) (string, error) { return b.open(stored, secretData, ErrCannotOpen) }

// SealHeader encrypts a webhook header value as Seal does a secret.
func (b *Box) SealHeader(plain string) (string, error) { return b.seal(plain, headerData) }

// OpenHeader returns the plain text of a stored header value as Open does
// for a secret.
func (b *Box) OpenHeader(stored string) (string, error) {
	return b.open(stored, headerData, ErrCannotOpenHeader)
}

func (b *Box) seal(plain string, ad []byte) (string, error) {
	if b == nil || plain == "" {
		return plain, nil
	}
	aead := b.aeads[b.current]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	ct := aead.Seal(nonce, nonce, []byte(plain), ad)
	return prefix + b.current + ":" + base64.RawStdEncoding.EncodeToString(ct), nil
}

func (b *Box) open(stored string, ad []byte, cannot error) (string, error) {
	if !Sealed(stored) {
		return stored, nil
	}
	rest := strings.TrimPrefix(stored, prefix)
	id, data, ok := strings.Cut(rest, ":")
	if !ok {
		return "", fmt.Errorf("%w: malformed sealed value", cannot)
	}
	if b == nil {
		return "", fmt.Errorf("%w: it was encrypted with key %s and no secrets.key is configured", cannot, id)
	}
	aead, known := b.aeads[id]
	if !known {
		return "", fmt.Errorf("%w: it was encrypted with key %s, which is neither secrets.key nor in secrets.previous_keys", cannot, id)
	}
	ct, err := base64.RawStdEncoding.DecodeString(data)
	if err != nil || len(ct) < aead.NonceSize() {
		return "", fmt.Errorf("%w: malformed sealed value", cannot)
	}
	plain, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], ad)
	if err != nil {
		return "", fmt.Errorf("%w: key %s does not authenticate it (altered or wrong key)", cannot, id)
	}
	return string(plain), nil
}

// Current reports whether stored is as Seal would store it now: sealed with
// the current key, or plain text when there is no key. Values that are not
// current are worth sealing again.
func (b *Box) Current(stored string) bool {
	if stored == "" {
		return true
	}
	if b == nil {
		return !Sealed(stored)
	}
	return strings.HasPrefix(stored, prefix+b.current+":")
}

// Generate returns a new random secret: 32 bytes, URL-safe base64 (43
// characters), prefixed "whsec_" so that it is recognisable in a paste.
func Generate() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b), nil
}
