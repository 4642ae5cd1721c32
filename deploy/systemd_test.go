package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The systemd unit runs the relay as the README says, gives it time to
// drain, does not restart it on a bad configuration, and, where systemd is
// installed, passes `systemd-analyze verify` without a remark (which is how
// it reports unknown or misspelt keys).
func TestSystemdUnit(t *testing.T) {
	const path = "systemd/smtm-relay.service"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{} // "Section.Key" -> values
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not key=value", path, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	one := func(key string) string {
		if len(keys[key]) != 1 {
			t.Fatalf("%s: want one %s, have %q", path, key, keys[key])
		}
		return keys[key][0]
	}
	exe := strings.Fields(one("Service.ExecStart"))
	if len(exe) != 4 || filepath.Base(exe[0]) != "relay" || exe[1] != "run" || exe[2] != "--config" {
		t.Errorf("ExecStart %q: want relay run --config FILE", exe)
	}
	if stop, err := time.ParseDuration(one("Service.TimeoutStopSec") + "s"); err != nil || stop < 25*time.Second {
		t.Errorf("TimeoutStopSec %s: want room for delivery.drain_timeout (15s) and the recording after it", one("Service.TimeoutStopSec"))
	}
	if one("Service.RestartPreventExitStatus") != "2" {
		t.Errorf("RestartPreventExitStatus: want 2 (a bad configuration)")
	}
	if one("Service.User") == "" || one("Service.NoNewPrivileges") != "yes" || one("Service.ProtectSystem") != "strict" {
		t.Errorf("want a user of its own, NoNewPrivileges and ProtectSystem=strict")
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit's keys were not verified by systemd")
		return
	}
	// verify wants the program to exist: any executable stands in for it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), exe[0], self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
