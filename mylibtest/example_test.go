package mylibtest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/mylibtest"
)

// Two Clients on one host pool, as two tests running in parallel would have
// them: each in a schema of its own, so neither sees the other's events.
func ExampleNew() {
	ctx := context.Background()
	// The host's test pool, opened once for its tests (in TestMain, say).
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()

	// In a test, t is the test's *testing.T and its cleanup drops the
	// schemas; this example has no test to take one from.
	t := &testing.T{}

	signup := mylibtest.New(t, pool)
	payments := mylibtest.New(t, pool)

	if _, err := signup.Record(ctx, mylib.Event{Actor: "alice", Action: "signup", Subject: "account:42"}); err != nil {
		fmt.Println(err)
		return
	}
	inSignup, err := signup.Count(ctx, "account:42")
	if err != nil {
		fmt.Println(err)
		return
	}
	inBilling, err := payments.Count(ctx, "account:42")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("schemas of their own:", signup.Schema() != payments.Schema(),
		strings.HasPrefix(signup.Schema(), mylibtest.SchemaPrefix))
	fmt.Println("events of account:42 seen by the first:", inSignup)
	fmt.Println("events of account:42 seen by the second:", inBilling)
	// Output:
	// schemas of their own: true true
	// events of account:42 seen by the first: 1
	// events of account:42 seen by the second: 0
}
