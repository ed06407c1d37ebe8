package mylib_test

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
)

// tenant is the host application's own Manager: any type with Pool and Schema.
type tenant struct {
	pool   *pgxpool.Pool
	schema string
}

func (t tenant) Pool() *pgxpool.Pool { return t.pool }
func (t tenant) Schema() string      { return t.schema }

// Embedded: the host opens one pool and lends it to the library once per
// tenant, each in its own schema. The library never closes the host's pool.
func Example_embedded() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()

	acme, err := mylib.New(ctx, mylib.WithManager(tenant{pool, "tenant_acme"}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer acme.Close()
	globex, err := mylib.New(ctx, mylib.WithManager(tenant{pool, "tenant_globex"}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer globex.Close()

	if _, err := acme.Record(ctx, mylib.Event{Actor: "wile", Action: "order", Subject: "invoice:7"}); err != nil {
		fmt.Println(err)
		return
	}
	inAcme, err := acme.Count(ctx, "invoice:7")
	if err != nil {
		fmt.Println(err)
		return
	}
	inGlobex, err := globex.Count(ctx, "invoice:7")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("invoice:7 events in tenant_acme:", inAcme)
	fmt.Println("invoice:7 events in tenant_globex:", inGlobex)

	acme.Close()
	globex.Close()
	var one int
	err = pool.QueryRow(ctx, "SELECT 1").Scan(&one)
	fmt.Println("host pool still open:", err == nil)

	// Tenants leave: the host drops their schemas, and with them the
	// library's tables and version tables.
	for _, schema := range []string{"tenant_acme", "tenant_globex"} {
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			fmt.Println(err)
			return
		}
	}
	// Output:
	// invoice:7 events in tenant_acme: 1
	// invoice:7 events in tenant_globex: 0
	// host pool still open: true
}
