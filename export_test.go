package mylib

// The SQL of the domain's statements as written: for the benchmark's raw twin
// to render by hand and run through pgx alone, and for the plan tests to
// EXPLAIN.
var (
	RecordSQLText            = recordSQL.String()
	ListFirstSQLText         = listFirstSQL.String()
	ListAfterSQLText         = listAfterSQL.String()
	CountSQLText             = countSQL.String()
	PurgeBatchSQLText        = purgeBatchSQL.String()
	LockEmptySubjectsSQLText = lockEmptySubjectsSQL.String()
	DeleteSubjectsSQLText    = deleteSubjectsSQL.String()
)
