package jobs

// A job queue: the domain of a library made from the template, which the
// template's newlib test puts in place of the example domain.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/acme/jobs/internal/sqltmpl"
)

// Job is work to do: what kind, with what payload.
type Job struct {
	ID      int64
	Kind    string
	Payload json.RawMessage
}

var (
	enqueueSQL = sqltmpl.Must(`INSERT INTO {{tables.jobs}} (kind, payload) VALUES ($1, coalesce($2::jsonb, '{}')) RETURNING id`)

	// The oldest job no one has claimed, skipping those another Claim is
	// taking: claims never wait for each other.
	claimSQL = sqltmpl.Must(`UPDATE {{tables.jobs}} SET claimed_at = now()
WHERE id = (SELECT id FROM {{tables.jobs}} WHERE claimed_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, kind, payload`)
)

// Enqueue adds a job of kind with payload (nil for {}) and returns its ID.
func (c *Client) Enqueue(ctx context.Context, kind string, payload json.RawMessage) (int64, error) {
	if err := c.use(); err != nil {
		return 0, err
	}
	if kind == "" {
		return 0, fmt.Errorf("%w: Enqueue is given an empty kind: name what the job does, e.g. \"send-email\"", ErrInvalidArgument)
	}
	st := c.stmts.Get(enqueueSQL)
	var id int64
	if err := c.pool.QueryRow(ctx, st.SQL, st.Args(kind, payload)...).Scan(&id); err != nil {
		return 0, c.fail(err, "enqueueing a %s job", kind)
	}
	return id, nil
}

// Claim takes the oldest job no one has claimed; ok is false when there is none.
func (c *Client) Claim(ctx context.Context) (job Job, ok bool, err error) {
	if err := c.use(); err != nil {
		return Job{}, false, err
	}
	st := c.stmts.Get(claimSQL)
	err = c.pool.QueryRow(ctx, st.SQL, st.Args()...).Scan(&job.ID, &job.Kind, &job.Payload)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Job{}, false, nil
	case err != nil:
		return Job{}, false, c.fail(err, "claiming a job")
	}
	return job, true, nil
}
