package mylib

// The library's own (newlib.manifest): the privileges the example domain's
// methods need, which a library made from the template lists for its own.

import "github.com/pgdual/mylib/internal/grants"

// runtimePrivileges are the privileges the library's methods need at run
// time, table by table: what Grants gives a runtime role, and no more. They
// belong to the example domain (audit.go): a library made from this template
// lists its own. TestGrants_RuntimeRoleNeedsEveryGrantAndNoMore runs every
// method as a role with exactly these, and checks that each one is needed.
//
//   - events: List and Count read them, Record writes them, Purge deletes them;
//   - subjects: Record finds or adds the subject and locks it FOR KEY SHARE,
//     List and Count look it up, Purge locks the ones left without events FOR
//     UPDATE and deletes them. Row locks need UPDATE on one column: id, which
//     is GENERATED ALWAYS and so cannot be set to a value.
var runtimePrivileges = []grants.Table{
	{Name: "events", Privileges: []string{"SELECT", "INSERT", "DELETE"}},
	{Name: "subjects", Privileges: []string{"SELECT", "INSERT", "DELETE", "UPDATE (id)"}},
}
