package cdc

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// socketQuiet sees bytes that wait in the socket, and none once they are
// read.
func TestSocketQuiet(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer server.Close()

	if quiet, known := socketQuiet(client); !quiet || !known {
		t.Fatalf("nothing sent: quiet %v, known %v", quiet, known)
	}
	if _, err := server.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	// Loopback delivers at once, but give the kernel a moment all the same.
	for range 1000 {
		if quiet, _ := socketQuiet(client); !quiet {
			break
		}
	}
	if quiet, known := socketQuiet(client); quiet || !known {
		t.Fatalf("ten bytes waiting: quiet %v, known %v", quiet, known)
	}
	if _, err := io.ReadFull(client, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if quiet, known := socketQuiet(client); !quiet || !known {
		t.Fatalf("all read: quiet %v, known %v", quiet, known)
	}
	// Through TLS, the socket below is asked.
	if _, known := socketQuiet(tls.Client(client, &tls.Config{})); !known {
		t.Fatal("a TLS connection's socket was not found")
	}
	// A connection that is no socket cannot tell.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, known := socketQuiet(a); known {
		t.Fatal("a pipe answered as a socket")
	}
}
