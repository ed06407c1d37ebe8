-- The audit log: one row per event, listed per subject newest first.
-- Tables are named only as {{tables.name}}: the library renders them for its schema.

-- +goose Up
CREATE TABLE {{tables.events}} (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    subject     text        NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_subject_time ON {{tables.events}} (subject, occurred_at DESC, id DESC);

-- +goose Down
DROP TABLE {{tables.events}};
