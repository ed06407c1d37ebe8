package mylib_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
)

// The host's write and its audit record commit together, or neither does: a
// declined payment rolls back the debit and its record alike.
func ExampleClient_RecordTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	// tenant is the host's Manager, as in the embedded example.
	history, err := mylib.New(ctx, mylib.WithManager(tenant{pool, "example_recordtx"}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer history.Close()

	// A table of the host's own.
	if _, err := pool.Exec(ctx, "CREATE TABLE example_accounts (id int PRIMARY KEY, balance int NOT NULL)"); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := pool.Exec(ctx, "INSERT INTO example_accounts VALUES (7, 100)"); err != nil {
		fmt.Println(err)
		return
	}

	debit := func(amount int) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "UPDATE example_accounts SET balance = balance - $1 WHERE id = 7", amount); err != nil {
				return err
			}
			ev := mylib.Event{Actor: "host", Action: "debit", Subject: "account:7", Data: fmt.Appendf(nil, `{"amount": %d}`, amount)}
			if _, err := history.RecordTx(ctx, tx, ev); err != nil {
				return err
			}
			if amount > 50 {
				return errors.New("declined: over the limit") // rolls back the update and the record
			}
			return nil
		})
	}
	fmt.Println("debit 10:", debit(10))
	fmt.Println("debit 500:", debit(500))

	var balance int
	if err := pool.QueryRow(ctx, "SELECT balance FROM example_accounts WHERE id = 7").Scan(&balance); err != nil {
		fmt.Println(err)
		return
	}
	records, err := history.Count(ctx, "account:7")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("balance:", balance, "history records:", records)

	// Leave the database as the example found it.
	history.Close()
	if _, err := pool.Exec(ctx, "DROP TABLE example_accounts"); err != nil {
		fmt.Println(err)
	}
	if _, err := pool.Exec(ctx, "DROP SCHEMA example_recordtx CASCADE"); err != nil {
		fmt.Println(err)
	}
	// Output:
	// debit 10: <nil>
	// debit 500: declined: over the limit
	// balance: 90 history records: 1
}
