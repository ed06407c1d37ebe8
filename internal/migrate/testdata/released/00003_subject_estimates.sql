-- A query for one subject finds its id first (an InitPlan), so the planner
-- estimates its rows from the average number of events per subject. With few
-- subjects and one big one that average is large, and the planner then reads
-- the whole table to count a quiet subject's few events, or walks the big
-- one's to page through them. An audit log has many subjects, about one for
-- every hundred events: say so (ANALYZE records it), and every per-subject
-- query reads the index on (subject_id, occurred_at, id), costing what that
-- subject holds.

-- +goose Up
ALTER TABLE {{tables.events}} ALTER COLUMN subject_id SET (n_distinct = -0.01);

-- +goose Down
ALTER TABLE {{tables.events}} ALTER COLUMN subject_id RESET (n_distinct);
