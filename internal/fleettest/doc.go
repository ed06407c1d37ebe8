// Package fleettest runs the library the way deployments do, against real
// servers: fleets of processes starting at once on one empty schema, directly
// and behind a PgBouncer in transaction pooling mode, migrators killed inside
// the migration lock, hosts with idle-transaction timeouts. It has tests only.
//
// Its fleet members are its own test binary run again, so it keeps a TestMain
// that starts no server before a test asks for one: a member process costs
// only its own start.
package fleettest
