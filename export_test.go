package mylib

// The SQL of the domain's statements as written, for the benchmark's raw twin
// to render by hand and run through pgx alone.
var (
	RecordSQLText    = recordSQL.String()
	ListFirstSQLText = listFirstSQL.String()
)
