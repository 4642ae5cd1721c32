package admin

import (
	"net/http"
	"strconv"
	"sync"
)

// testRetryAfter is the Retry-After of a test event refused because the
// company has too many in flight: about as long as a quick receiver takes.
const testRetryAfter = 5

// testSlots counts each company's test events in flight. A test event holds
// a request to the API, a connection to the receiver and a goroutine until
// the receiver answers or delivery.timeout ends it, so one company sending
// many at once to a receiver that never answers would hold that many of
// each.
type testSlots struct {
	mu     sync.Mutex
	inUse  map[int64]int
	perCom int // 0: no limit
}

// take reserves a slot of company, or reports false when all are in use.
func (t *testSlots) take(company int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perCom > 0 && t.inUse[company] >= t.perCom {
		return false
	}
	if t.inUse == nil {
		t.inUse = map[int64]int{}
	}
	t.inUse[company]++
	return true
}

func (t *testSlots) release(company int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inUse[company]--; t.inUse[company] <= 0 {
		delete(t.inUse, company)
	}
}

// tooManyTests answers a test event over the company's limit.
func tooManyTests(limit int) *apiError {
	e := newError(http.StatusTooManyRequests, "too_many_tests", "",
		"this company already has "+strconv.Itoa(limit)+" test events in flight (admin.max_concurrent_tests); try again when one has finished")
	e.retryAfter = testRetryAfter
	return e
}
