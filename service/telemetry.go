package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/outage"
	"github.com/smartmaintenance/relay/internal/pgconnect"
	"github.com/smartmaintenance/relay/store"
	"github.com/smartmaintenance/relay/telemetry"
)

// Telemetry is what the process hands the relay to report through. Every
// field is optional: nil traces nothing, records nothing, serves no metrics.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Metrics is served on /metrics when observability.listen is set.
	Metrics http.Handler
}

// successWindow is the admin guide's window for a webhook's success rate.
const successWindow = 24 * time.Hour

// successRefresh bounds how often the success rates are computed: scrapes
// in between get the last figures.
const successRefresh = 30 * time.Second

// gaugeTimeout bounds the queries behind one collection.
const gaugeTimeout = 5 * time.Second

// observeState registers the gauges read from the databases when metrics
// are collected: deliveries per state, replication lag in bytes, WAL the
// slot retains, and each webhook's 24-hour success rate.
func observeState(mp metric.MeterProvider, st *store.Store, platform *pgxpool.Pool, slot string, log *slog.Logger) (metric.Registration, error) {
	m := mp.Meter("github.com/smartmaintenance/relay/service")
	stored, err := m.Int64ObservableGauge("relay.deliveries.stored",
		metric.WithDescription("Deliveries in the store by status: pending (never attempted), retrying (waiting for the next attempt), failed (no attempt left; kept for retention.failed)."),
		metric.WithUnit("{delivery}"))
	if err != nil {
		return nil, err
	}
	lagBytes, err := m.Int64ObservableGauge("relay.replication.lag.bytes",
		metric.WithDescription("WAL written by the platform database that the relay has not yet confirmed as stored (current WAL position minus the slot's confirmed_flush_lsn)."),
		metric.WithUnit("By"))
	if err != nil {
		return nil, err
	}
	retained, err := m.Int64ObservableGauge("relay.replication.slot.retained_wal",
		metric.WithDescription("WAL the replication slot keeps from removal (current WAL position minus the slot's restart_lsn); it grows while the relay is down or behind."),
		metric.WithUnit("By"))
	if err != nil {
		return nil, err
	}
	rate, err := m.Float64ObservableGauge("relay.webhook.success_rate",
		metric.WithDescription("Per webhook, over the last 24 hours: attempts answered 2xx / all attempts (1 when there were none), as the admin guide defines it."),
		metric.WithUnit("1"))
	if err != nil {
		return nil, err
	}
	attempts24, err := m.Int64ObservableGauge("relay.webhook.attempts.24h",
		metric.WithDescription("Per webhook, attempts started in the last 24 hours (the success rate's denominator)."),
		metric.WithUnit("{attempt}"))
	if err != nil {
		return nil, err
	}

	statusAttrs := map[string]metric.ObserveOption{}
	for _, s := range []string{"pending", "retrying", "failed"} {
		statusAttrs[s] = metric.WithAttributes(attribute.String("status", s))
	}
	rates := &rateCache{st: st}
	// A scrape comes every few seconds: a database that is down is logged
	// when it begins, every outage.Remind and when it works again.
	failing := outage.New(log, slog.LevelWarn, "metrics: reading the gauges from the databases")
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, gaugeTimeout)
		defer cancel()
		var errs []error
		if c, err := st.CountDeliveries(ctx); err != nil {
			errs = append(errs, pgconnect.Explain(err))
		} else {
			o.ObserveInt64(stored, c.Pending, statusAttrs["pending"])
			o.ObserveInt64(stored, c.Retrying, statusAttrs["retrying"])
			o.ObserveInt64(stored, c.Failed, statusAttrs["failed"])
		}
		if lag, held, ok, err := slotLag(ctx, platform, slot); err != nil {
			errs = append(errs, pgconnect.Explain(err))
		} else if ok {
			o.ObserveInt64(lagBytes, lag)
			o.ObserveInt64(retained, held)
		}
		if ws, err := rates.get(ctx); err != nil {
			errs = append(errs, pgconnect.Explain(err))
		} else {
			for _, w := range ws {
				attrs := metric.WithAttributes(attribute.String("webhook_id", strconv.FormatInt(w.WebhookID, 10)),
					attribute.String("company_id", strconv.FormatInt(w.CompanyID, 10)), attribute.String("webhook", w.Name))
				o.ObserveFloat64(rate, w.Rate(), attrs)
				o.ObserveInt64(attempts24, w.Attempts, attrs)
			}
		}
		// Not outage.Step: a collection cut short by its own timeout (a
		// database that hangs) is a failure to log too.
		if err := errors.Join(errs...); err != nil {
			failing.Failed(time.Now(), err)
		} else {
			failing.Worked(time.Now())
		}
		return nil
	}, stored, lagBytes, retained, rate, attempts24)
}

// slotLag reads the slot's lag and retained WAL; ok is false when the slot
// does not exist (yet).
func slotLag(ctx context.Context, pool *pgxpool.Pool, slot string) (lag, retained int64, ok bool, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, 0, false, fmt.Errorf("platform database: %w", err)
	}
	defer conn.Release()
	var current string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&current); err != nil {
		return 0, 0, false, fmt.Errorf("read WAL position: %w", err)
	}
	// Read after the WAL position, so the lag is never negative.
	s, err := cdc.Slot(ctx, conn.Conn(), slot)
	if err != nil || !s.Exists {
		return 0, 0, false, err
	}
	now, err := event.ParseLSN(current)
	if err != nil {
		return 0, 0, false, err
	}
	if now > s.ConfirmedFlush {
		lag = int64(now - s.ConfirmedFlush)
	}
	return lag, s.RetainedBytes, true, nil
}

// rateCache keeps the success rates for successRefresh: the query reads a
// day of attempts, which scrapes every few seconds need not repeat.
type rateCache struct {
	st   *store.Store
	mu   sync.Mutex
	at   time.Time
	last []store.WebhookSuccess
}

func (c *rateCache) get(ctx context.Context) ([]store.WebhookSuccess, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < successRefresh {
		return c.last, nil
	}
	ws, err := c.st.SuccessRates(ctx, successWindow)
	if err != nil {
		return nil, err
	}
	c.last, c.at = ws, time.Now()
	return ws, nil
}

// readiness lists what /readyz checks: the platform database answers, the
// change feed streams the slot or stands by for another relay, and the
// state database takes writes.
func readiness(platform *pgxpool.Pool, src *cdc.Source, st *store.Store) []telemetry.Check {
	return []telemetry.Check{
		{Name: "database", Run: func(ctx context.Context) error {
			if err := platform.Ping(ctx); err != nil {
				return fmt.Errorf("platform database: %w", pgconnect.Explain(err))
			}
			return nil
		}},
		{Name: "replication", Run: func(context.Context) error {
			switch s := src.State(); s {
			case cdc.FeedStreaming, cdc.FeedStandby:
				return nil
			default:
				return fmt.Errorf("change feed is %s", s)
			}
		}},
		{Name: "store", Run: func(ctx context.Context) error { return pgconnect.Explain(st.Writable(ctx)) }},
	}
}
