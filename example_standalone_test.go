package mylib_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/pgdual/mylib"
)

// Standalone: the library builds its own pool from a DSN, runs its migrations
// in its schema, and closes the pool in Close.
func Example_standalone() {
	ctx := context.Background()
	dsn := os.Getenv("DATABASE_URL") // e.g. postgres://app:secret@localhost:5432/app

	client, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	ev, err := client.Record(ctx, mylib.Event{
		Actor: "alice", Action: "login", Subject: "account:42",
		Data: []byte(`{"ip": "192.0.2.7"}`),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("recorded:", ev.Actor, ev.Action, ev.Subject)

	page, err := client.List(ctx, "account:42", 10, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("events of account:42:", len(page.Events), "in schema", client.Schema())

	// Retention: delete what is older than a cutoff (here, everything).
	purged, err := client.Purge(ctx, time.Now().Add(time.Hour))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("purged:", purged)
	// Output:
	// recorded: alice login account:42
	// events of account:42: 1 in schema audit
	// purged: 1
}
