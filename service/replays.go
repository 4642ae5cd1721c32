package service

import (
	"log/slog"
	"sync"

	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/store"
)

// replayFilters decides, for replays, whether an event meets a webhook's
// filter, as the ingester does for live events: a filter that does not
// compile, or fails on an event, refuses it. Filters are compiled once per
// text; a replay reads its webhook's current filter at every step, so an
// edit applies to the rest of a replay.
type replayFilters struct {
	log *slog.Logger

	mu       sync.Mutex
	compiled map[string]*mapper.Filter // nil: does not compile
}

func newReplayFilters(log *slog.Logger) *replayFilters {
	return &replayFilters{log: log, compiled: map[string]*mapper.Filter{}}
}

// maxCompiledFilters bounds the cache: past it, it starts again.
const maxCompiledFilters = 1024

func (r *replayFilters) keep(webhookID int64, filter string, e store.ReplayEvent) bool {
	r.mu.Lock()
	f, ok := r.compiled[filter]
	if !ok {
		if len(r.compiled) >= maxCompiledFilters {
			clear(r.compiled)
		}
		var err error
		if f, err = mapper.CompileFilter(filter, nil); err != nil {
			r.log.Warn("webhook filter does not compile; the replay skips its events", "webhook_id", webhookID, "error", err)
			f = nil
		}
		r.compiled[filter] = f
	}
	r.mu.Unlock()
	if f == nil {
		return false
	}
	env, err := mapper.NewFilterEnv(e.Body)
	if err != nil {
		return false
	}
	pass, err := f.Match(env)
	return err == nil && pass
}
