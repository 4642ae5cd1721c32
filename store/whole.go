package store

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// errWebhooksMoved fails a write of a batch whose deliveries all went
// ahead (Batch.WholeAt) when the webhooks' version is not the one they
// were decided with: nothing is stored, and the write decides again.
var errWebhooksMoved = errors.New("the webhooks changed since the deliveries taken ahead were decided")

// webhooksMovedMark is in the message of the error writeAheadSQL fails
// with when the webhooks' version moved (invalid_text_representation, of
// the text it casts to int so that the statement fails at run time, not
// when its plan is made).
const webhooksMovedMark = "webhooks changed since the fan-out"

// writeAheadSQL stores a batch whose deliveries all went ahead with the
// webhooks of version $13 (Batch.WholeAt): the events that have a delivery
// taken ahead, each with those deliveries, as writeEventsSQL stores
// deliveries taken ahead (those whose first attempt is over as it left
// them, with the attempt recorded; the others leased to their sender,
// $11, for $12 µs), and nothing else. It answers the number of deliveries
// stored and the time of the write.
//
// Those are the deliveries writeEventsSQL would store, decided from the
// webhooks of that version: it fails, storing nothing, when the version
// is no longer $13 (webhooksMovedMark). Events stored before (a replay)
// are skipped with their deliveries, as there.
//
// It leaves out what a batch of such deliveries does not need: the
// fan-out from the webhooks' rows, the ranking that leases and holds, the
// pauses and the filters' check, whose plan PostgreSQL sets up anew for
// every execution: a quarter of its time in a write of one event (about
// 0.45 ms of its CPU). In a group of a hundred this statement costs a
// fifth less per event (BenchmarkWriteCommitWhole against
// BenchmarkWriteCommitAhead).
var writeAheadSQL = `
WITH ahead AS (
    ` + aheadRows(14) + `
), ev AS (
    ` + insertEvents + `
    WHERE (SELECT (CASE WHEN max(version) = $13 THEN '1'
                        ELSE '` + webhooksMovedMark + `: version ' || coalesce(max(version)::text, 'none') END)::int
           FROM {{schema}}.webhooks_version WHERE one) = 1
      AND EXISTS (SELECT 1 FROM ahead a WHERE a.lsn = u.lsn AND a.seq = u.seq)
    ON CONFLICT (source, commit_lsn, seq) DO NOTHING
    RETURNING id, commit_lsn, seq, event_type, company_id
), ins AS (
    ` + insertDeliveries + `
    SELECT a.id, ev.id, a.webhook_id, ev.company_id, ev.event_type,
           CASE WHEN a.status = 'retrying' THEN now() + a.retry_us * interval '1 microsecond' ELSE now() END,
           CASE WHEN a.status = '' THEN $11 END,
           CASE WHEN a.status = '' THEN now() + $12::bigint * interval '1 microsecond' END,
           COALESCE(NULLIF(a.status, ''), 'pending'), CASE WHEN a.status = '' THEN 0 ELSE 1 END,
           NULLIF(a.status_code, 0), NULLIF(a.error, ''),
           CASE WHEN a.status IN ('delivered', 'failed') THEN now() END,
           CASE WHEN a.status = 'delivered' THEN a.started_at END, CASE WHEN a.status = 'delivered' THEN a.duration_ms END,
           CASE WHEN a.status = 'delivered' THEN NULLIF(a.status_code, 0) END, CASE WHEN a.status = 'delivered' THEN NULLIF(a.snippet, '') END,
           CASE WHEN a.status = 'delivered' THEN $11 END
    FROM ev JOIN ahead a ON a.lsn = ev.commit_lsn AND a.seq = ev.seq
    RETURNING 1
), att AS (
    ` + insertAttempts + `
    SELECT a.id, a.webhook_id, 1, a.started_at, a.duration_ms, NULLIF(a.status_code, 0), NULLIF(a.error, ''), NULLIF(a.snippet, ''), $11
    FROM ev JOIN ahead a ON a.lsn = ev.commit_lsn AND a.seq = ev.seq
    WHERE a.status IN ('retrying', 'failed')
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), now()`

// scanAhead reads writeAheadSQL's answer, for a batch decided with the
// webhooks of version wholeAt: every delivery it stored went ahead, so it
// leases none.
func (w *Writer) scanAhead(row pgx.Row, wholeAt int64) (int64, Leased, error) {
	var created int64
	var now time.Time
	if err := row.Scan(&created, &now); err != nil {
		return 0, Leased{}, err
	}
	return created, Leased{Due: now, At: w.began, Ahead: int(created), WebhooksVersion: wholeAt}, nil
}
