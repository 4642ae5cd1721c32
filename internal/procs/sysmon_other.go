//go:build !unix

package procs

import (
	"errors"
	"os"
)

// Exec cannot start the program again in place of this process here; it
// returns nil when GODEBUG sets schedtrace already, and an error
// otherwise.
func Exec(args []string) error {
	if _, ok := WithSysmonTicking(os.Environ()); !ok {
		return nil
	}
	return errors.New("cannot start again with GODEBUG=" + SysmonSetting + " on this system; set it in the relay's environment")
}
