package jobs

import "github.com/acme/jobs/internal/grants"

// runtimePrivileges are what Enqueue and Claim need: Claim locks and updates
// the row it takes.
var runtimePrivileges = []grants.Table{{Name: "jobs", Privileges: []string{"SELECT", "INSERT", "UPDATE (claimed_at)"}}}
