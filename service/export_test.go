package service

import "testing"

// IgnoreConfigFile leaves SIGHUP as the only reload trigger of relays
// started during the test.
func IgnoreConfigFile(t testing.TB) {
	ignoreConfigFile.Store(true)
	t.Cleanup(func() { ignoreConfigFile.Store(false) })
}

// CDCConfig is cdcConfig, the change feed's configuration from the
// relay's.
var CDCConfig = cdcConfig
