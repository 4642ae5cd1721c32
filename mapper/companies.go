package mapper

import (
	"time"

	"github.com/smartmaintenance/relay/event"
)

// Company is what a payload needs to know about a company: its name and the
// time zone its timestamps are written in.
type Company struct {
	ID   int64
	Name string
	// Location is the company's time zone, or nil when the company has no
	// time zone or one that is not a valid IANA name: Map then uses
	// Options.DefaultLocation.
	Location *time.Location
	// TimeZone is the time zone name as the companies table holds it, kept
	// so that an invalid one can be reported.
	TimeZone string
}

// Companies is an in-memory directory of companies, kept by the caller from
// the companies table's tracked state (see Mapper.UpdateCompanies). It is
// small: one entry per company.
//
// A Companies is safe for use by one goroutine at a time; callers that share
// one must serialise access themselves.
type Companies struct {
	byID  map[int64]Company
	zones map[string]*time.Location // loaded time zones by name; nil for invalid names
}

// NewCompanies returns an empty directory.
func NewCompanies() *Companies {
	return &Companies{byID: make(map[int64]Company), zones: make(map[string]*time.Location)}
}

// Set records company id with vals, the tracked columns of its row: name and
// time_zone. A missing, empty or unknown time zone leaves Location nil, which
// means the default location.
func (c *Companies) Set(id int64, vals event.Row) {
	name, _ := vals["name"].(string)
	tz, _ := vals["time_zone"].(string)
	c.byID[id] = Company{ID: id, Name: name, Location: c.zone(tz), TimeZone: tz}
}

// Delete forgets company id.
func (c *Companies) Delete(id int64) { delete(c.byID, id) }

// Clear forgets every company.
func (c *Companies) Clear() { clear(c.byID) }

// Lookup returns company id, and whether the directory knows it.
func (c *Companies) Lookup(id int64) (Company, bool) {
	if c == nil {
		return Company{}, false
	}
	co, ok := c.byID[id]
	return co, ok
}

// Len returns the number of companies in the directory.
func (c *Companies) Len() int { return len(c.byID) }

// zone loads a time zone by name once and caches it (loading reads the time
// zone database). "Local" is refused: it means the relay host's zone, never a
// company's.
func (c *Companies) zone(name string) *time.Location {
	if name == "" || name == "Local" {
		return nil
	}
	if loc, ok := c.zones[name]; ok {
		return loc
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		loc = nil
	}
	c.zones[name] = loc
	return loc
}
