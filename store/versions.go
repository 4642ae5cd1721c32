package store

import (
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

// MigrationVersions returns the versions of the migrations embedded in this
// build, in order: what Migrate brings a schema up to. `relay check`
// compares them with the versions a schema has applied.
func MigrationVersions() ([]int, error) {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(files))
	for _, f := range files {
		base := strings.TrimPrefix(f, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("bad migration name %s", base)
		}
		out = append(out, v)
	}
	sort.Ints(out)
	return out, nil
}
