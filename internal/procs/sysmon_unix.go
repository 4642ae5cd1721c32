//go:build unix

package procs

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// Exec starts the running program again in place of this process (the
// same process id, arguments, open files and standard streams), with
// SysmonSetting added to its environment's GODEBUG, so that the runtime
// reads it as it starts. It returns nil at once when GODEBUG sets
// schedtrace already, which is also what the program started again finds;
// otherwise it returns only when it could not start it.
func Exec(args []string) error {
	env, ok := WithSysmonTicking(os.Environ())
	if !ok {
		return nil
	}
	// The running program's own file, even if it was replaced on disk
	// since it started (an upgrade): the new version starts only when the
	// operator restarts it.
	exe := "/proc/self/exe"
	if runtime.GOOS != "linux" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("start again with GODEBUG=%s: %w", SysmonSetting, err)
		}
	}
	if err := syscall.Exec(exe, args, env); err != nil {
		return fmt.Errorf("start again with GODEBUG=%s: %w", SysmonSetting, err)
	}
	return nil
}
