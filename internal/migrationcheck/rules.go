package migrationcheck

import (
	"fmt"
	"strings"
)

// Rule names a kind of statement that blocks an install in use. Allowances
// name rules: "-- mylib:allow index: reason".
type Rule string

// The rules, each with the lesson its refusal teaches.
const (
	// RuleIndex: an index built on an existing table without CONCURRENTLY.
	RuleIndex Rule = "index"
	// RuleRewrite: an existing table rewritten (a column's type changed, a
	// column added with a volatile default, VACUUM FULL...).
	RuleRewrite Rule = "rewrite"
	// RuleValidate: every row of an existing table checked under a lock that
	// blocks writes (SET NOT NULL, a foreign key or check without NOT VALID).
	RuleValidate Rule = "validate"
	// RuleHeldLock: rows of an existing table read while the file's
	// transaction holds a lock, taken by an earlier statement, that blocks
	// writes (a backfill after an ALTER TABLE, a VALIDATE CONSTRAINT in the
	// transaction that added the constraint NOT VALID).
	RuleHeldLock Rule = "held-lock"
	// RuleRename: an existing table or column renamed.
	RuleRename Rule = "rename"
	// RuleDrop: an existing table or column dropped.
	RuleDrop Rule = "drop"
)

// Rules lists every rule.
var Rules = []Rule{RuleIndex, RuleRewrite, RuleValidate, RuleHeldLock, RuleRename, RuleDrop}

// Problem is one statement that breaks a rule, one bad allowance, or one
// file that fails to apply.
type Problem struct {
	// File is the file as Files names it, e.g. migrations/00004_index.sql.
	File string
	// Line is the line of File where the statement (or allowance) starts,
	// counted from 1.
	Line int
	// Statement is that line, as written.
	Statement string
	// Rule is the rule the statement breaks; "" for a bad allowance or a
	// file that fails to apply.
	Rule Rule
	// What says what the statement does, Why why that blocks an install,
	// Safe the safe way to write it.
	What, Why, Safe string
	// Allow is the comment that would allow it, to put on the line above the
	// statement with a true reason; "" when no allowance can.
	Allow string

	failed bool // the file failed to apply
}

// String is the lesson: where, what, why, the safe way, the allowance.
func (p Problem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d: %s\n", p.File, p.Line, p.Statement)
	if p.Rule != "" {
		fmt.Fprintf(&b, "    rule %s: %s\n", p.Rule, p.What)
	} else {
		fmt.Fprintf(&b, "    %s\n", p.What)
	}
	if p.Why != "" {
		fmt.Fprintf(&b, "    Why: %s\n", p.Why)
	}
	if p.Safe != "" {
		fmt.Fprintf(&b, "    Safe way: %s\n", p.Safe)
	}
	if p.Allow != "" {
		fmt.Fprintf(&b, "    If it cannot block any install, say why on the line above the statement:\n        %s\n", p.Allow)
	}
	return strings.TrimRight(b.String(), "\n")
}

// lockMode is a table lock mode, ranked as PostgreSQL's conflict table ranks
// them; 0 is none.
type lockMode int

// lockModes are pg_locks' names of the modes, weakest first.
var lockModes = []string{"AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
	"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}

const (
	shareLock           lockMode = 5 // the weakest mode that blocks writes
	accessExclusiveLock lockMode = 8 // the one mode that blocks reads
)

// String is the mode as SQL names it: SHARE ROW EXCLUSIVE.
func (m lockMode) String() string {
	if m < 1 || int(m) > len(lockModes) {
		return "no"
	}
	name := strings.TrimSuffix(lockModes[m-1], "Lock")
	var b strings.Builder
	for i, r := range name {
		if i > 0 && 'A' <= r && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// held names the mode as a lock held: "an ACCESS EXCLUSIVE lock".
func (m lockMode) held() string {
	if m >= accessExclusiveLock {
		return "an " + m.String() + " lock"
	}
	return "a " + m.String() + " lock"
}

// blocks says what waits on a table while the mode is held.
func (m lockMode) blocks(table string) string {
	if m >= accessExclusiveLock {
		return "every query on " + table + " waits (reads included)"
	}
	return "inserts, updates and deletes on " + table + " wait (reads go on)"
}

const untilCommit = "until the file's transaction commits"

// The safe ways, one per cause.
const (
	safeIndex = "build it in a file of its own marked -- +goose NO TRANSACTION, as CREATE INDEX CONCURRENTLY name ON {{tables.x}} (...): reads and writes go on while it builds. " +
		"For a unique or primary key constraint, build its unique index concurrently, then ALTER TABLE ... ADD CONSTRAINT name UNIQUE USING INDEX name (or PRIMARY KEY USING INDEX) in a later file; " +
		"to rebuild an index, REINDEX INDEX CONCURRENTLY in a NO TRANSACTION file."
	safeTypeChange = "expand and contract: add a new column of the new type, have the code write both, backfill the old rows in batches (a later file marked -- +goose NO TRANSACTION, or the application), " +
		"move the readers to it, and drop the old column in a later release. Changes that need no rewrite pass: varchar(n) to a longer varchar or to text, numeric(p,s) to a larger p."
	safeDefault = "add the column with no default, or a constant one (PostgreSQL 11 and later store a constant default without touching the rows; now() counts as constant, clock_timestamp(), random() and gen_random_uuid() do not), " +
		"then ALTER COLUMN ... SET DEFAULT for new rows, and backfill the existing rows in batches in a later file."
	safeRewrite = "VACUUM FULL, CLUSTER, SET LOGGED or UNLOGGED, SET TABLESPACE and TRUNCATE replace a table's storage under ACCESS EXCLUSIVE: " +
		"leave them to an operator's maintenance window, outside the migrations; for a type change, add a new column and move to it (expand, backfill, contract)."
	safeConstraint = "add it NOT VALID (ALTER TABLE ... ADD CONSTRAINT name ... NOT VALID: new rows are checked at once, existing ones not yet), " +
		"then ALTER TABLE ... VALIDATE CONSTRAINT name in a later file, or after it in a file marked -- +goose NO TRANSACTION: " +
		"validating takes a SHARE UPDATE EXCLUSIVE lock, under which reads and writes go on."
	safeNotNull = "add CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT it in a later file (or after it in a file marked -- +goose NO TRANSACTION), which lets reads and writes go on; " +
		"then SET NOT NULL, which trusts the valid check instead of reading the table, and DROP CONSTRAINT the check. " +
		"On PostgreSQL 18 and later: ADD CONSTRAINT name NOT NULL col NOT VALID, then VALIDATE CONSTRAINT name."
	safeValidate = "find the form that validates in its own transaction: ADD ... NOT VALID, then VALIDATE CONSTRAINT in a later file or in a file marked -- +goose NO TRANSACTION; " +
		"for SET NOT NULL, a validated CHECK (col IS NOT NULL) first."
	safeHeldLock = "run it where that lock is not held: in a later file, or mark this file -- +goose NO TRANSACTION so that each statement commits on its own. " +
		"A constraint added NOT VALID is validated outside the transaction that added it. " +
		"Backfill a big table in batches by key range (UPDATE ... WHERE id > $1 AND id <= $2), each batch in its own transaction."
	safeRename = "expand and contract: add the new column (or table) beside the old one, have the code write both, backfill in batches, move the readers in the next release, " +
		"and drop the old one a release later. A renamed table can keep its old name for a release as a view, in the same file: CREATE VIEW {{tables.old}} AS SELECT * FROM {{tables.new}} " +
		"(a simple view takes inserts and updates); the check then lets the rename pass."
	safeDrop = "contract in two releases: first a release whose code no longer reads or writes it (drop its NOT NULL or give it a default, so that inserts need not name it), " +
		"then, in a later release, drop it with an allowance that names the release that stopped using it."
)

const whyRename = "the release before this one keeps running during a rolling deploy, and again after a rollback, and its SQL names %s: " +
	"its queries fail from the moment this file commits. (The rename itself holds ACCESS EXCLUSIVE only for a moment.)"

const whyDrop = "the release before this one keeps running during a rolling deploy, and again after a rollback, and its SQL still names %s: " +
	"its queries fail from the moment this file commits, and a rollback cannot bring the data back."
