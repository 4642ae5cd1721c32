package signature

import (
	"bytes"
	"testing"
)

// BenchmarkSign measures signing one typical payload.
func BenchmarkSign(b *testing.B) {
	body := bytes.Repeat([]byte(`{"event":"task.completed","data":{"task_id":12345}}`), 6)
	secret := []byte("a-long-random-shared-secret")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		Sign(secret, body)
	}
}

// BenchmarkSigner measures signing the same payload with a Signer, which
// keeps the keyed hash of its secret.
func BenchmarkSigner(b *testing.B) {
	body := bytes.Repeat([]byte(`{"event":"task.completed","data":{"task_id":12345}}`), 6)
	s := NewSigner([]byte("a-long-random-shared-secret"))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		s.Sign(body)
	}
}
