-- Reference schema of the SmartMaintenance platform, as far as the relay
-- reads it. The relay never changes these tables: it only reads them through
-- logical replication (and one snapshot when its slot is created).
-- Default REPLICA IDENTITY everywhere, as the platform ships.

CREATE TABLE companies (
    id          bigserial PRIMARY KEY,
    name        text        NOT NULL,
    time_zone   text        NOT NULL DEFAULT 'UTC',   -- IANA name, e.g. Asia/Jakarta
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id              bigserial PRIMARY KEY,
    company_id      bigint      NOT NULL REFERENCES companies(id),
    email           text        NOT NULL,
    full_name       text        NOT NULL,
    role            text        NOT NULL DEFAULT 'technician'
                    CHECK (role IN ('admin', 'supervisor', 'technician', 'viewer')),
    active          boolean     NOT NULL DEFAULT true,
    created_by      bigint,
    deactivated_by  bigint,
    deactivated_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE assets (
    id          bigserial PRIMARY KEY,
    company_id  bigint      NOT NULL REFERENCES companies(id),
    name        text        NOT NULL,
    location    text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    id                bigserial PRIMARY KEY,
    company_id        bigint      NOT NULL REFERENCES companies(id),
    asset_id          bigint      REFERENCES assets(id),
    title             text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    status            text        NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'assigned', 'in_progress', 'completed', 'approved', 'rejected', 'cancelled')),
    priority          text        NOT NULL DEFAULT 'medium'
                      CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    technician_id     bigint      REFERENCES users(id),
    assigned_by       bigint      REFERENCES users(id),
    reviewed_by       bigint      REFERENCES users(id),
    rejection_reason  text,
    due_at            timestamptz,
    completed_at      timestamptz,
    reviewed_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE repair_requests (
    id            bigserial PRIMARY KEY,
    company_id    bigint      NOT NULL REFERENCES companies(id),
    asset_id      bigint      REFERENCES assets(id),
    title         text        NOT NULL,
    description   text        NOT NULL DEFAULT '',
    priority      text        NOT NULL DEFAULT 'medium'
                  CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    status        text        NOT NULL DEFAULT 'open'
                  CHECK (status IN ('open', 'in_review', 'approved', 'in_progress', 'done', 'rejected', 'cancelled')),
    requested_by  bigint      REFERENCES users(id),
    updated_by    bigint      REFERENCES users(id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shutdowns (
    id            bigserial PRIMARY KEY,
    company_id    bigint      NOT NULL REFERENCES companies(id),
    asset_id      bigint      NOT NULL REFERENCES assets(id),
    reason        text        NOT NULL,
    status        text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    reported_by   bigint      REFERENCES users(id),
    resolved_by   bigint      REFERENCES users(id),
    resolution    text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);

-- One row per export of the activity log (the platform's local audit trail).
CREATE TABLE activity_log_exports (
    id           bigserial PRIMARY KEY,
    company_id   bigint      NOT NULL REFERENCES companies(id),
    exported_by  bigint      REFERENCES users(id),
    format       text        NOT NULL DEFAULT 'csv' CHECK (format IN ('csv', 'xlsx', 'pdf')),
    range_from   timestamptz,
    range_to     timestamptz,
    row_count    integer     NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);
