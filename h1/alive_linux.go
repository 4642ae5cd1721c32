package h1

import (
	"net"
	"syscall"
)

// closedByPeer reports whether the peer closed nc or sent something on it,
// without waiting and without taking what it sent: a kept connection is
// checked so before a request is written on it.
func closedByPeer(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var buf [1]byte
	gone := false
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// n == 0 without an error is the peer's FIN; n > 0 is data
		// nobody asked for; EAGAIN is an open, quiet connection.
		gone = n > 0 || (n == 0 && err == nil) || (err != nil && err != syscall.EAGAIN && err != syscall.EINTR)
		return true
	})
	return gone || err != nil
}
