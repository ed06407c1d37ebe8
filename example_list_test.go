package mylib_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/pgdual/mylib"
)

// Paging through a subject's events, newest first: pass each page's Next to
// get the following page, until Next is nil.
func ExampleClient_List() {
	ctx := context.Background()
	client, err := mylib.New(ctx, mylib.WithDSN(os.Getenv("DATABASE_URL")), mylib.WithSchema("example_paging"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	opened := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	for i, action := range []string{"open", "deposit", "withdraw", "deposit", "close"} {
		ev := mylib.Event{Actor: "alice", Action: action, Subject: "account:9", At: opened.Add(time.Duration(i) * time.Hour)}
		if _, err := client.Record(ctx, ev); err != nil {
			fmt.Println(err)
			return
		}
	}

	var after *mylib.Cursor // nil: the first page
	for n := 1; ; n++ {
		page, err := client.List(ctx, "account:9", 2, after)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("page %d:", n)
		for _, ev := range page.Events {
			fmt.Printf(" %s %s", ev.At.UTC().Format("15:04"), ev.Action)
		}
		fmt.Println()
		if page.Next == nil {
			break
		}
		after = page.Next
	}

	// Leave the database as the example found it: the events are a day old
	// or less, and Purge deletes what happened before its cutoff.
	if _, err := client.Purge(ctx, opened.AddDate(0, 0, 1)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// page 1: 13:00 close 12:00 deposit
	// page 2: 11:00 withdraw 10:00 deposit
	// page 3: 09:00 open
}
