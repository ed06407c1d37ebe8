package mylib_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Times of the skewed data set: the quiet subject's events are the oldest,
// the big subject's the newest, so that a scan in time order reaches the
// quiet subject last.
var (
	quietStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	smallStart = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	bigStart   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

const (
	quietEvents = 30
	smallEvents = 5
)

// seedSkewed fills schema, already migrated, with the data that makes a
// careless plan slow: a subject "big" with big recent events (none when big
// is 0), a subject "quiet" with a few old ones, and small subjects with a few
// events each. Then it runs ANALYZE, as autovacuum would. Many small subjects
// make an average subject small, and a join then sorts each page; few make it
// large, and a join then walks the big subject's events in time order.
func seedSkewed(t testing.TB, pool *pgxpool.Pool, schema string, big, smallSubjects int) {
	t.Helper()
	ctx := context.Background()
	events, subjects := pgx.Identifier{schema, "events"}.Sanitize(), pgx.Identifier{schema, "subjects"}.Sanitize()
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{fmt.Sprintf(`INSERT INTO %s (name) SELECT 'small:' || g FROM generate_series(1, $1::int) g`, subjects), []any{smallSubjects}},
		{fmt.Sprintf(`INSERT INTO %s (name) VALUES ('quiet'), ('big')`, subjects), nil},
		{fmt.Sprintf(`INSERT INTO %s (actor, action, subject_id, occurred_at)
			SELECT 'seed', 'quiet-' || g, s.id, $1::timestamptz + g * interval '1 minute'
			FROM %s s, generate_series(1, %d) g WHERE s.name = 'quiet'`, events, subjects, quietEvents), []any{quietStart}},
		{fmt.Sprintf(`INSERT INTO %s (actor, action, subject_id, occurred_at)
			SELECT 'seed', 'small', s.id, $1::timestamptz + g * interval '1 hour' + s.id * interval '1 second'
			FROM %s s, generate_series(1, %d) g WHERE s.name LIKE 'small:%%'`, events, subjects, smallEvents), []any{smallStart}},
		{fmt.Sprintf(`INSERT INTO %s (actor, action, subject_id, occurred_at)
			SELECT 'seed', 'big', s.id, $1::timestamptz + g * interval '1 second'
			FROM %s s, generate_series(1, $2::int) g WHERE s.name = 'big'`, events, subjects), []any{bigStart, big}},
		{"ANALYZE " + events, nil},
		{"ANALYZE " + subjects, nil},
	} {
		_, err := pool.Exec(ctx, st.sql, st.args...)
		require.NoError(t, err, st.sql)
	}
}

// planNode is the part of EXPLAIN (FORMAT JSON)'s output the tests read.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	IndexName    string     `json:"Index Name"`
	Plans        []planNode `json:"Plans"`
}

// nodes lists every node of the plan as "Node Type on relation using index".
func (n planNode) nodes() []string {
	node := n.NodeType
	if n.RelationName != "" {
		node += " on " + n.RelationName
	}
	if n.IndexName != "" {
		node += " using " + n.IndexName
	}
	out := []string{node}
	for _, c := range n.Plans {
		out = append(out, c.nodes()...)
	}
	return out
}

// sortsTableRows reports whether the plan sorts rows it read from a table:
// a Sort with a table's scan below it. A Sort over the rows a statement
// computed (Purge's array_agg(DISTINCT subject_id) of the batch it deleted)
// reads nothing more: PostgreSQL 15 sorts those inside the Aggregate node,
// and from 16 the plan shows that same sort as a Sort node.
func (n planNode) sortsTableRows() bool {
	if n.NodeType == "Sort" || n.NodeType == "Incremental Sort" {
		return n.readsTable()
	}
	return slices.ContainsFunc(n.Plans, planNode.sortsTableRows)
}

// readsTable reports whether the plan scans a table.
func (n planNode) readsTable() bool {
	return n.RelationName != "" || slices.ContainsFunc(n.Plans, planNode.readsTable)
}

// planKind is how a statement gets planned: with its arguments known, as in
// exec mode and for the first five runs of a prepared statement, or once for
// any arguments, as a prepared statement may be from the sixth run on.
type planKind struct {
	name    string
	explain func(t *testing.T, conn *pgx.Conn, sql string, args []any) planNode
}

var planKinds = []planKind{
	{"custom (exec mode)", func(t *testing.T, conn *pgx.Conn, sql string, args []any) planNode {
		// An unnamed statement with its arguments bound: what exec mode sends.
		return explain(t, conn, "EXPLAIN (FORMAT JSON) "+sql, args)
	}},
	{"generic (prepared)", func(t *testing.T, conn *pgx.Conn, sql string, args []any) planNode {
		ctx := context.Background()
		_, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
		require.NoError(t, err)
		defer conn.Exec(ctx, "RESET plan_cache_mode")
		_, err = conn.Exec(ctx, "PREPARE checked AS "+sql)
		require.NoError(t, err)
		defer conn.Exec(ctx, "DEALLOCATE checked")
		// EXECUTE takes no bound parameters: its arguments are literals,
		// which the prepared statement's parameter types then read.
		literals := make([]string, len(args))
		for i, a := range args {
			literals[i] = literal(a)
		}
		return explain(t, conn, "EXPLAIN (FORMAT JSON) EXECUTE checked("+strings.Join(literals, ", ")+")", nil)
	}},
}

// literal writes v as an SQL literal of unknown type.
func literal(v any) string {
	var text string
	switch v := v.(type) {
	case nil:
		return "NULL"
	case time.Time:
		text = v.Format(time.RFC3339Nano)
	case []int64:
		text = strings.Join(strings.Fields(fmt.Sprint(v)), ",")
		text = "{" + strings.Trim(text, "[]") + "}"
	default:
		text = fmt.Sprint(v)
	}
	return "'" + strings.ReplaceAll(text, "'", "''") + "'"
}

func explain(t *testing.T, conn *pgx.Conn, sql string, args []any) planNode {
	t.Helper()
	var out string
	require.NoError(t, conn.QueryRow(context.Background(), sql, append([]any{pgx.QueryExecModeExec}, args...)...).Scan(&out))
	var plans []struct{ Plan planNode }
	require.NoError(t, json.Unmarshal([]byte(out), &plans))
	require.Len(t, plans, 1)
	return plans[0].Plan
}

// The statements behind List, Count and Purge read through the index that
// leads to what they return, whatever else the table holds: with 30,000
// events of one subject, a quiet subject's page, next page and count never
// scan the table, walk other subjects' events or sort, in both plan kinds.
func TestAudit_PlansReadOnlyWhatTheyReturn(t *testing.T) {
	t.Parallel()
	for _, small := range []int{1000, 10, 0} {
		t.Run(fmt.Sprintf("%d small subjects", small), func(t *testing.T) {
			t.Parallel()
			checkPlans(t, small)
		})
	}
}

func checkPlans(t *testing.T, small int) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	pool := pgtest.Pool(t, dsn)
	seedSkewed(t, pool, "audit", 30_000, small)

	c, err := mylib.New(ctx, mylib.WithManager(host{pool, "audit"}))
	require.NoError(t, err)
	defer c.Close()
	first, err := c.List(ctx, "quiet", 20, nil)
	require.NoError(t, err)
	require.Len(t, first.Events, 20)
	require.Equal(t, "quiet-30", first.Events[0].Action, "newest first")
	n, err := c.Count(ctx, "quiet")
	require.NoError(t, err)
	require.EqualValues(t, quietEvents, n)
	var ids []int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT array_agg(id) FROM audit.subjects WHERE name LIKE 'small:%'`).Scan(&ids))

	// Prepared (pgx's default mode), List and Count settle on their generic
	// plan after PostgreSQL's five custom ones: planned once per connection,
	// not on every call.
	one := pgtest.Pool(t, dsn, func(c *pgxpool.Config) { c.MaxConns = 1 })
	c1, err := mylib.New(ctx, mylib.WithManager(host{one, "audit"}))
	require.NoError(t, err)
	defer c1.Close()
	for range 10 {
		_, err := c1.List(ctx, "quiet", 20, nil)
		require.NoError(t, err)
		_, err = c1.List(ctx, "quiet", 20, first.Next)
		require.NoError(t, err)
		_, err = c1.Count(ctx, "quiet")
		require.NoError(t, err)
	}
	for _, text := range []string{mylib.ListFirstSQLText, mylib.ListAfterSQLText, mylib.CountSQLText} {
		sql, err := sqltmpl.Render("audit", text)
		require.NoError(t, err)
		var generic int64
		require.NoError(t, one.QueryRow(ctx, "SELECT generic_plans FROM pg_prepared_statements WHERE statement = $1", sql).Scan(&generic))
		require.Positive(t, generic, "the prepared statement is planned anew on every call:\n%s", sql)
	}

	const subjectIndex, timeIndex = "events_subject_time", "events_time"
	cutoff := smallStart // every quiet event, no small one
	for _, st := range []struct {
		name  string
		text  string
		args  []any
		index string // the events index the plan must use
	}{
		{"List, first page", mylib.ListFirstSQLText, []any{"quiet", 21}, subjectIndex},
		{"List, next page", mylib.ListAfterSQLText, []any{"quiet", 21, first.Next.At, first.Next.ID}, subjectIndex},
		{"List, the big subject", mylib.ListFirstSQLText, []any{"big", 21}, subjectIndex},
		{"Count", mylib.CountSQLText, []any{"quiet"}, subjectIndex},
		{"Purge, a batch of events", mylib.PurgeBatchSQLText, []any{cutoff, mylib.PurgeBatchSize, nil}, timeIndex},
		{"Purge, a later batch", mylib.PurgeBatchSQLText, []any{cutoff, mylib.PurgeBatchSize, quietStart}, timeIndex},
		{"Purge, locking empty subjects", mylib.LockEmptySubjectsSQLText, []any{ids}, subjectIndex},
		{"Purge, deleting them", mylib.DeleteSubjectsSQLText, []any{ids}, subjectIndex},
	} {
		sql, err := sqltmpl.Render("audit", st.text)
		require.NoError(t, err)
		for _, kind := range planKinds {
			t.Run(st.name+"/"+kind.name, func(t *testing.T) {
				conn, err := pool.Acquire(ctx)
				require.NoError(t, err)
				defer conn.Release()
				root := kind.explain(t, conn.Conn(), sql, st.args)
				nodes := root.nodes()
				plan := strings.Join(nodes, "\n")
				var usesIndex bool
				for _, node := range nodes {
					usesIndex = usesIndex || strings.Contains(node, "using "+st.index)
					require.NotContains(t, node, "Seq Scan on events", "a sequential scan of the events table:\n%s", plan)
				}
				require.False(t, root.sortsTableRows(), "a sort of rows read from a table:\n%s", plan)
				require.True(t, usesIndex, "the index %s is not used:\n%s", st.index, plan)
			})
		}
	}
}

// Purge's batch is planned for the table as it is, on every call: a host
// connection that purged the table while it was empty (where a prepared
// statement settles on a generic plan) purges the 20,000 events recorded
// since, before any ANALYZE, and never reads the table sequentially.
func TestAudit_PurgeIsPlannedForTheTableAsItIs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, migratedDSN(t), func(c *pgxpool.Config) { c.MaxConns = 1 })
	_, err := pool.Exec(ctx, "ALTER TABLE audit.events SET (autovacuum_enabled = false)") // no ANALYZE to replan
	require.NoError(t, err)
	c, err := mylib.New(ctx, mylib.WithManager(host{pool, "audit"}))
	require.NoError(t, err)
	defer c.Close()
	for range 10 {
		_, err := c.Purge(ctx, purgeLine)
		require.NoError(t, err)
	}
	const events = 10 * mylib.PurgeBatchSize
	seedOld(t, pool, events)

	scans := sequentialScans(t, pool, "audit.events")
	began := time.Now()
	n, err := c.Purge(ctx, purgeLine)
	require.NoError(t, err)
	require.EqualValues(t, events, n)
	require.Equal(t, scans, sequentialScans(t, pool, "audit.events"), "Purge read the events table sequentially")
	t.Logf("Purge of %d events: %s", events, time.Since(began).Round(time.Millisecond))
}

// sequentialScans returns how many sequential scans of table the statistics
// have counted, with those of pool's connection, its only one.
func sequentialScans(t *testing.T, pool *pgxpool.Pool, table string) int64 {
	t.Helper()
	ctx := context.Background()
	// The connection's counts reach the statistics when it next goes idle.
	_, err := pool.Exec(ctx, "SELECT pg_stat_force_next_flush()")
	require.NoError(t, err)
	var n int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = $1::regclass", table).Scan(&n))
	return n
}

// The plan check tells a sort of table rows from a sort of computed ones, as
// PostgreSQL 15 and 18 plan Purge's batch and a careless ORDER BY.
func TestPlanNode_SortsTableRows(t *testing.T) {
	scan := planNode{NodeType: "Index Scan", RelationName: "events", IndexName: "events_time"}
	cte := planNode{NodeType: "CTE Scan"}
	for _, tt := range []struct {
		name string
		plan planNode
		want bool
	}{
		{"15: the aggregate sorts inside", planNode{NodeType: "Aggregate", Plans: []planNode{{NodeType: "ModifyTable", Plans: []planNode{scan}}, cte}}, false},
		{"18: a Sort of the deleted rows", planNode{NodeType: "Aggregate", Plans: []planNode{{NodeType: "ModifyTable", Plans: []planNode{scan}}, {NodeType: "Sort", Plans: []planNode{cte}}}}, false},
		{"a Sort of a table's rows", planNode{NodeType: "Limit", Plans: []planNode{{NodeType: "Sort", Plans: []planNode{{NodeType: "Seq Scan", RelationName: "events"}}}}}, true},
		{"an Incremental Sort over an index", planNode{NodeType: "Incremental Sort", Plans: []planNode{scan}}, true},
	} {
		require.Equal(t, tt.want, tt.plan.sortsTableRows(), tt.name)
	}
}
