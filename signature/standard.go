package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com/).
//
// A webhook with standard_webhooks on also carries
//
//	webhook-id: <the delivery id, as in X-SMTM-Delivery>
//	webhook-timestamp: <unix seconds of the attempt>
//	webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">
//
// keyed with the same bytes as X-SMTM-Signature: the UTF-8 bytes of the
// webhook's secret. The Standard Webhooks libraries take their key as
// "whsec_" followed by the base64 of the key bytes; [StandardKey] writes the
// secret in that form. During a secret rotation's overlap window the header
// holds two signatures, the new secret's first, separated by a space.
const (
	// StandardIDHeader carries the delivery id, the same for every attempt.
	StandardIDHeader = "webhook-id"
	// StandardTimestampHeader carries the attempt's time in unix seconds.
	StandardTimestampHeader = "webhook-timestamp"
	// StandardSignatureHeader carries one or more space-separated
	// "v1,<base64>" signatures.
	StandardSignatureHeader = "webhook-signature"
	// StandardKeyPrefix precedes the base64 key bytes in the whsec_ form.
	StandardKeyPrefix = "whsec_"
	// StandardVersion precedes each signature in the header.
	StandardVersion = "v1,"
	// DefaultTolerance is how far a timestamp may be from now, either way,
	// for StandardVerify: the Standard Webhooks libraries' default.
	DefaultTolerance = 5 * time.Minute
)

// PreviousHeader carries, while a rotated secret's overlap window lasts,
// "sha256=<hex>" of the body keyed with the previous secret; Header holds
// the new secret's. A receiver that still has the previous secret verifies
// this one (or either: see [VerifyAny]).
const PreviousHeader = "X-SMTM-Signature-Previous"

// Errors of StandardVerify, beside ErrEmptySecret, ErrNoSignature,
// ErrMalformed and ErrMismatch.
var (
	// ErrNoID means the webhook-id header is missing.
	ErrNoID = errors.New("signature: no webhook-id")
	// ErrTimestamp means webhook-timestamp is missing, not unix seconds, or
	// further from now than the tolerance: a stale or replayed request.
	ErrTimestamp = errors.New("signature: timestamp")
)

// StandardKey returns secret in the whsec_ form the Standard Webhooks
// libraries take: "whsec_" followed by the standard base64 of its bytes.
func StandardKey(secret []byte) string {
	return StandardKeyPrefix + base64.StdEncoding.EncodeToString(secret)
}

// ParseStandardKey returns the key bytes of a whsec_ key (the prefix is
// optional, as in the Standard Webhooks libraries): for a key made by
// StandardKey, the webhook's secret.
func ParseStandardKey(key string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(key, StandardKeyPrefix))
	if err != nil {
		return nil, fmt.Errorf("%w: key is not whsec_ followed by base64: %v", ErrMalformed, err)
	}
	if len(b) == 0 {
		return nil, ErrEmptySecret
	}
	return b, nil
}

// StandardSign returns one webhook-signature value, "v1,<base64>", for the
// message id, the unix time ts and body, keyed with key (the key bytes:
// the webhook's secret, not its whsec_ form).
func StandardSign(key []byte, id string, ts int64, body []byte) string {
	return standardSign(hmac.New(sha256.New, key), id, ts, body)
}

func standardSign(h hash.Hash, id string, ts int64, body []byte) string {
	h.Reset()
	var num [20]byte
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(num[:0], ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	var sum [sha256.Size]byte
	var out [len(StandardVersion) + 44]byte // 44: base64 of 32 bytes
	copy(out[:], StandardVersion)
	base64.StdEncoding.Encode(out[len(StandardVersion):], h.Sum(sum[:0]))
	return string(out[:])
}

// SignStandard returns StandardSign(secret, id, ts, body) for the Signer's
// secret.
func (s *Signer) SignStandard(id string, ts int64, body []byte) string {
	h := s.keyed.Get().(hash.Hash)
	sig := standardSign(h, id, ts, body)
	s.keyed.Put(h)
	return sig
}

// StandardVerify checks the Standard Webhooks headers of a request against
// its raw body: webhook-id must be present, webhook-timestamp within
// tolerance of now (either way; tolerance <= 0 takes DefaultTolerance), and
// one of the "v1," signatures in webhook-signature must be that of
// "id.timestamp.body" under key (the key bytes; see ParseStandardKey).
// Signatures of other versions are ignored. It returns nil or an error
// wrapping ErrEmptySecret, ErrNoID, ErrTimestamp, ErrNoSignature or
// ErrMismatch. Comparisons take constant time.
func StandardVerify(key, body []byte, header http.Header, tolerance time.Duration) error {
	return StandardVerifyAt(key, body, header, tolerance, time.Now())
}

// StandardVerifyAt is StandardVerify with the given time as now.
func StandardVerifyAt(key, body []byte, header http.Header, tolerance time.Duration, now time.Time) error {
	if len(key) == 0 {
		return ErrEmptySecret
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	id := header.Get(StandardIDHeader)
	if id == "" {
		return ErrNoID
	}
	rawTS := header.Get(StandardTimestampHeader)
	ts, err := strconv.ParseInt(rawTS, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not unix seconds", ErrTimestamp, rawTS)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance {
		return fmt.Errorf("%w: %v old, more than the tolerance %v", ErrTimestamp, d.Truncate(time.Second), tolerance)
	} else if d < -tolerance {
		return fmt.Errorf("%w: %v in the future, more than the tolerance %v", ErrTimestamp, (-d).Truncate(time.Second), tolerance)
	}
	sigs := header.Get(StandardSignatureHeader)
	if strings.TrimSpace(sigs) == "" {
		return ErrNoSignature
	}
	want := []byte(StandardSign(key, id, ts, body))
	for _, sig := range strings.Fields(sigs) {
		if hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return ErrMismatch
}

// VerifyAny reports whether the X-SMTM-Signature or, during a rotation's
// overlap window, the X-SMTM-Signature-Previous header of a request is the
// signature of body under one of secrets: a receiver in the middle of a
// rotation passes both the secret it had and the new one. It returns nil,
// or Verify's error for the first secret and Header.
func VerifyAny(secrets [][]byte, body []byte, header http.Header) error {
	var first error
	for _, secret := range secrets {
		for _, name := range []string{Header, PreviousHeader} {
			v := header.Get(name)
			if v == "" && name == PreviousHeader {
				continue
			}
			err := Verify(secret, body, v)
			if err == nil {
				return nil
			}
			if first == nil {
				first = err
			}
		}
	}
	if first == nil {
		return ErrEmptySecret
	}
	return first
}
