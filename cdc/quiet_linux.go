package cdc

import (
	"crypto/tls"
	"net"
	"syscall"
	"unsafe"
)

// socketQuiet reports whether no byte waits to be read on c's socket
// (FIONREAD), and whether it could tell: a connection that is not a socket
// of this process answers false, false.
func socketQuiet(c net.Conn) (quiet, known bool) {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	var n int32
	var errno syscall.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		return false, false
	}
	return n == 0, true
}
