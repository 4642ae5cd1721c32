package store

import (
	"fmt"
	"sort"
)

// Header values are stored like secrets: with secrets.key set, each value
// in the headers object is sealed (secrets.Box.SealHeader), because that is
// where admins put credentials such as "Authorization: Bearer ...". The
// names stay in clear, so that the table still shows which headers a
// webhook sends.

// sealHeaders returns the stored form of the plain header values: each value
// sealed with s.box (as it is without a key). Where stored already holds a
// header's value under the current key, that stored form is kept: a new
// seal would differ every time, and the row would look changed.
func (s *Store) sealHeaders(plain, stored map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(plain))
	for name, v := range plain {
		if old, ok := stored[name]; ok && s.box.Current(old) {
			if opened, err := s.box.OpenHeader(old); err == nil && opened == v {
				out[name] = old
				continue
			}
		}
		sealed, err := s.box.SealHeader(v)
		if err != nil {
			return nil, fmt.Errorf("header %q: %w", name, err)
		}
		out[name] = sealed
	}
	return out, nil
}

// openHeaders returns the plain values of stored header values. A value
// none of the keys opens is left out (never sent as ciphertext) and
// described in problem.
func (s *Store) openHeaders(stored map[string]string) (plain map[string]string, problem string) {
	if len(stored) == 0 {
		return stored, ""
	}
	plain = make(map[string]string, len(stored))
	var bad []string
	for name, v := range stored {
		opened, err := s.box.OpenHeader(v)
		if err != nil {
			bad = append(bad, fmt.Sprintf("header %s: %v", name, err))
			continue
		}
		plain[name] = opened
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		problem = bad[0]
		if len(bad) > 1 {
			problem += fmt.Sprintf(" (and %d more headers)", len(bad)-1)
		}
	}
	return plain, problem
}
