//go:build !linux

package cdc

import "net"

// socketQuiet cannot tell on this system: the stream falls back to a
// pause (groupPause) to see that it is quiet.
func socketQuiet(net.Conn) (quiet, known bool) { return false, false }
