-- Subjects get a table of their own: events refer to them by id, so a subject's
-- name is stored once and the per-subject index is on a small integer.

-- +goose Up
CREATE TABLE {{tables.subjects}} (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

INSERT INTO {{tables.subjects}} (name)
SELECT DISTINCT subject FROM {{tables.events}};

ALTER TABLE {{tables.events}} ADD COLUMN subject_id bigint REFERENCES {{tables.subjects}} (id);
-- mylib:allow held-lock: events is empty here: 00001 and this file were first released together, so every install runs this file right after 00001
UPDATE {{tables.events}} e SET subject_id = s.id FROM {{tables.subjects}} s WHERE s.name = e.subject;
-- mylib:allow validate: events is empty here (00001 and this file were first released together)
ALTER TABLE {{tables.events}} ALTER COLUMN subject_id SET NOT NULL;

DROP INDEX {{schema}}.events_subject_time;
-- mylib:allow drop: no release has events.subject without this file, which drops it (00001 and this file were first released together)
ALTER TABLE {{tables.events}} DROP COLUMN subject;
-- mylib:allow index: events is empty here (00001 and this file were first released together)
CREATE INDEX events_subject_time ON {{tables.events}} (subject_id, occurred_at DESC, id DESC);
-- mylib:allow index: events is empty here (00001 and this file were first released together)
CREATE INDEX events_time ON {{tables.events}} (occurred_at);

-- +goose Down
ALTER TABLE {{tables.events}} ADD COLUMN subject text;
UPDATE {{tables.events}} e SET subject = s.name FROM {{tables.subjects}} s WHERE s.id = e.subject_id;
ALTER TABLE {{tables.events}} ALTER COLUMN subject SET NOT NULL;
DROP INDEX {{schema}}.events_time;
DROP INDEX {{schema}}.events_subject_time;
ALTER TABLE {{tables.events}} DROP COLUMN subject_id;
CREATE INDEX events_subject_time ON {{tables.events}} (subject, occurred_at DESC, id DESC);
DROP TABLE {{tables.subjects}};
