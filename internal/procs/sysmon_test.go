package procs

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSysmonTicking reads schedtrace as the runtime does: the last one of
// the key in GODEBUG, ticking when over 0.
func TestSysmonTicking(t *testing.T) {
	for _, tc := range []struct {
		godebug      string
		set, ticking bool
	}{
		{"", false, false},
		{"gctrace=1,madvdontneed=1", false, false},
		{SysmonSetting, true, true},
		{"gctrace=1," + SysmonSetting, true, true},
		{"schedtrace=0", true, false},
		{"schedtrace=1000,schedtrace=0", true, false},
		{"schedtrace=0,schedtrace=1000", true, true},
		{"schedtrace=x", true, false},
		{"schedtraces=1000", false, false},
	} {
		set, ticking := SysmonTicking(tc.godebug)
		if set != tc.set || ticking != tc.ticking {
			t.Errorf("SysmonTicking(%q) = %v, %v; want %v, %v", tc.godebug, set, ticking, tc.set, tc.ticking)
		}
	}
}

// TestWithSysmonTicking: the setting joins GODEBUG (the first one, which
// Go reads; the others go), and an environment whose GODEBUG decides
// schedtrace already is left as it is.
func TestWithSysmonTicking(t *testing.T) {
	for _, tc := range []struct {
		env, want []string
		changed   bool
	}{
		{[]string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + SysmonSetting}, true},
		{[]string{"GODEBUG=gctrace=1", "PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=gctrace=1," + SysmonSetting}, true},
		{[]string{"GODEBUG=", "PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + SysmonSetting}, true},
		{[]string{"GODEBUG=gctrace=1", "GODEBUG=schedtrace=0"}, []string{"GODEBUG=gctrace=1," + SysmonSetting}, true},
		{[]string{"GODEBUG=schedtrace=0", "PATH=/bin"}, []string{"GODEBUG=schedtrace=0", "PATH=/bin"}, false},
		{[]string{"GODEBUG=schedtrace=500"}, []string{"GODEBUG=schedtrace=500"}, false},
	} {
		got, changed := WithSysmonTicking(slices.Clone(tc.env))
		if changed != tc.changed || !slices.Equal(got, tc.want) {
			t.Errorf("WithSysmonTicking(%q) = %q, %v; want %q, %v", tc.env, got, changed, tc.want, tc.changed)
		}
	}
}

// TestExec: a process that calls Exec goes on as the same program with
// the same arguments and GODEBUG set, once (the program started again
// finds the setting and goes on), and the runtime takes the setting:
// schedtrace is also how often Go prints its scheduler's line, which a
// small value makes visible.
func TestExec(t *testing.T) {
	if os.Getenv("PROCS_EXEC_CHILD") == "1" {
		// The child: start again, say what it finds.
		if err := Exec(os.Args); err != nil {
			os.Stdout.WriteString("exec failed: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("pid " + strconv.Itoa(os.Getpid()) + " GODEBUG=" + os.Getenv("GODEBUG") + " args " + strings.Join(os.Args[1:], " ") + "\n")
		if os.Getenv("PROCS_EXEC_LINGER") == "1" {
			time.Sleep(200 * time.Millisecond) // for the runtime's monitor to print
		}
		os.Exit(0)
	}
	for _, tc := range []struct {
		name, godebug, want string
	}{
		{"started again", "", "GODEBUG=" + SysmonSetting},
		{"operator's GODEBUG kept", "gctrace=0", "GODEBUG=gctrace=0," + SysmonSetting},
		{"operator's schedtrace left alone", "schedtrace=0", "GODEBUG=schedtrace=0 "},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExec$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PROCS_EXEC_CHILD=1", "GODEBUG="+tc.godebug)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: %v\n%s%s", tc.name, err, stdout.String(), stderr.String())
		}
		out := stdout.String()
		if strings.Count(out, "pid ") != 1 || !strings.Contains(out, "pid "+strconv.Itoa(pid)+" ") || !strings.Contains(out, tc.want) ||
			!strings.Contains(out, "args -test.run=^TestExec$ -test.count=1") {
			t.Errorf("%s: child said %q; want one line, its own pid %d, %q and its arguments", tc.name, out, pid, tc.want)
		}
	}

	// The setting reaches the runtime: with schedtrace=1 it prints its line
	// every millisecond.
	cmd := exec.Command(os.Args[0], "-test.run=^TestExec$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PROCS_EXEC_CHILD=1", "PROCS_EXEC_LINGER=1", "GODEBUG=schedtrace=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SCHED ") {
		t.Errorf("GODEBUG=schedtrace=1: %v, no SCHED line from the runtime:\n%s", err, out)
	}
}
