package pgtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
)

// MainWithDatabase is Main for a package whose runnable examples need a
// database: examples get no *testing.T, so before the tests run it creates an
// empty database, sets the environment variable env to its DSN for the
// examples to read, and drops the database after the tests. Without a server
// it says why on stderr and, under CI=true, fails the run. m is TestMain's
// *testing.M, or what runs it.
func MainWithDatabase(m interface{ Run() int }, env string) int {
	mainCalled.Store(true)
	drop, err := exampleDatabase(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			return 1
		}
	}
	code := m.Run()
	if drop != nil {
		if err := drop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = max(code, 1)
		}
	}
	if err := closeBackend(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: stopping the test server:", err)
		code = max(code, 1)
	}
	return code
}

func exampleDatabase(env string) (drop func() error, err error) {
	b, err := current()
	if err != nil {
		return nil, err
	}
	template, err := b.template("empty", nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	name, err := b.createDatabase(ctx, "examples", template)
	if err != nil {
		return nil, err
	}
	os.Setenv(env, ConnDSN(b.adminDSN, name))
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
		defer cancel()
		return b.drop(ctx, b.admin, name)
	}, nil
}
