package signature_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/smartmaintenance/relay/signature"
)

// A receiver reads the raw body, verifies it, and only then decodes JSON.
func ExampleVerify() {
	secret := []byte("s3cr3t-0123456789abcdef") // the webhook's secret, from your own config

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body as bytes, with a limit; do not decode it yet.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		if err := signature.Verify(secret, body, r.Header.Get(signature.Header)); err != nil {
			// Log err for yourself; tell the caller nothing more.
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		// Deduplicate on the delivery id: retries and re-fires reuse it.
		_ = r.Header.Get(signature.DeliveryHeader)
		// Now decode body as JSON and handle r.Header.Get(signature.EventHeader).
		w.WriteHeader(http.StatusNoContent)
	})

	send := func(body []byte, header string) int {
		req := httptest.NewRequest(http.MethodPost, "/hooks/smartmaintenance", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(signature.EventHeader, "task.completed")
		req.Header.Set(signature.DeliveryHeader, "0b9f3c2e-8f1d-4a6b-9d3e-2c5a7e1f4b60")
		if header != "" {
			req.Header.Set(signature.Header, header)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec.Code
	}

	body := []byte(`{"event":"task.completed","timestamp":"2026-04-24T09:15:30+07:00","company_id":1,"company_name":"PT Kahatex","data":{"task_id":12345,"asset_id":678,"technician_id":42}}`)
	sig := signature.Sign(secret, body) // what the relay sends

	fmt.Println("signed:", send(body, sig))
	fmt.Println("tampered:", send(bytes.Replace(body, []byte("12345"), []byte("12346"), 1), sig))
	fmt.Println("unsigned:", send(body, ""))
	// Output:
	// signed: 204
	// tampered: 401
	// unsigned: 401
}

func ExampleVerify_errors() {
	secret := []byte("s3cr3t-0123456789abcdef")
	body := []byte(`{"event":"task.completed"}`)

	fmt.Println(signature.Verify(secret, body, signature.Sign(secret, body)))
	fmt.Println(signature.Verify(secret, body, ""))
	fmt.Println(signature.Verify(secret, body, "sha1=0123456789abcdef0123456789abcdef01234567"))
	fmt.Println(signature.Verify(secret, body, "0123"))
	fmt.Println(signature.Verify(secret, body, signature.Sign([]byte("another secret!!"), body)))
	fmt.Println(signature.Verify(nil, body, signature.Sign(nil, body)))
	// Output:
	// <nil>
	// signature: no signature
	// signature: unsupported algorithm "sha1"; want "sha256"
	// signature: malformed: missing "sha256=" prefix
	// signature: mismatch
	// signature: empty secret
}

func ExampleSign() {
	fmt.Println(signature.Sign([]byte("It's a Secret to Everybody"), []byte("Hello, World!")))
	// Output:
	// sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17
}

// A receiver of the Standard Webhooks headers verifies with the whsec_ form
// of the webhook's secret; the official libraries accept the same key.
func ExampleStandardVerify() {
	secret := []byte("s3cr3t-0123456789abcdef") // the webhook's secret
	whsec := signature.StandardKey(secret)      // what a Standard Webhooks library is given
	fmt.Println(whsec)

	key, err := signature.ParseStandardKey(whsec)
	if err != nil {
		panic(err)
	}
	body := []byte(`{"event":"task.completed"}`)
	// A request as the relay sends it (a webhook with standard_webhooks on).
	id, ts := "0b9f3c2e-8f1d-4a6b-9d3e-2c5a7e1f4b60", time.Now().Unix()
	h := http.Header{}
	h.Set(signature.StandardIDHeader, id)
	h.Set(signature.StandardTimestampHeader, fmt.Sprint(ts))
	h.Set(signature.StandardSignatureHeader, signature.StandardSign(secret, id, ts, body))

	fmt.Println(signature.StandardVerify(key, body, h, 0))
	fmt.Println(signature.StandardVerify(key, []byte(`{"event":"forged"}`), h, 0))
	// Output:
	// whsec_czNjcjN0LTAxMjM0NTY3ODlhYmNkZWY=
	// <nil>
	// signature: mismatch
}
