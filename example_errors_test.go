package mylib_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/pgdual/mylib"
)

// Branching on errors with errors.Is. New checks the options before it
// connects, so mistakes in them are refused with nothing created, whether a
// server listens at the DSN or not (nothing does at port 1).
func Example_errors() {
	ctx := context.Background()
	const nowhere = "postgres://app@localhost:1/app"

	for _, opts := range [][]mylib.Option{
		{mylib.WithDSN(nowhere), mylib.WithSchema("Audit-Log")}, // not a lowercase identifier
		{mylib.WithSchema("audit")},                             // no database given
		{mylib.WithDSN(nowhere), mylib.WithDSN(nowhere)},        // one DSN too many
	} {
		_, err := mylib.New(ctx, opts...)
		switch {
		case errors.Is(err, mylib.ErrInvalidSchema):
			fmt.Println("invalid schema: choose another name")
		case errors.Is(err, mylib.ErrInvalidConfig):
			fmt.Println("invalid configuration: fix the options")
		case err != nil:
			fmt.Println("could not start:", err)
		}
	}

	// A Client used after Close says so.
	client, err := mylib.New(ctx, mylib.WithDSN(os.Getenv("DATABASE_URL")), mylib.WithSchema("example_errors"))
	if err != nil {
		fmt.Println(err)
		return
	}
	client.Close()
	_, err = client.Count(ctx, "account:42")
	fmt.Println("closed:", errors.Is(err, mylib.ErrClosed))
	// Output:
	// invalid schema: choose another name
	// invalid configuration: fix the options
	// invalid configuration: fix the options
	// closed: true
}
