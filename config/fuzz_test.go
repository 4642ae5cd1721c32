package config

import (
	"os"
	"path/filepath"
	"testing"
)

func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.yaml")
	for _, s := range append(seeds, "example.yaml") {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("delivery: {timeout: 1e400}"))
	f.Add([]byte("webhooks: {endpoints: [null, 1, [2]]}"))
	f.Add([]byte("mapping: {rules: [{data: [[1]], on: {a: b}}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "relay.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, nil)
		if err != nil {
			if c != nil {
				t.Fatal("Load returned a config with an error")
			}
			return
		}
		// Whatever loads must validate and print safely.
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config that Validate rejects: %v", err)
		}
		_ = c.Warnings()
		_ = c.CheckEvents([]string{"task.completed"})
		_ = c.Redacted()
	})
}
