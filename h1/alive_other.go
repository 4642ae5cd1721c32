//go:build !linux

package h1

import "net"

// closedByPeer cannot look without reading here: a kept connection the
// peer closed is found when the request's write fails (see roundTrip).
func closedByPeer(net.Conn) bool { return false }
