-- +goose Up
CREATE TABLE {{tables.jobs}} (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL DEFAULT '{}',
    claimed_at timestamptz
);
CREATE INDEX jobs_unclaimed ON {{tables.jobs}} (id) WHERE claimed_at IS NULL;

-- +goose Down
DROP TABLE {{tables.jobs}};
