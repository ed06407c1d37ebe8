package migrationcheck

import (
	"fmt"
	"slices"
	"strings"
)

// finding is a rule a statement broke, with its lesson.
type finding struct {
	rule            Rule
	what, why, safe string
	// stands is a renamed table's old name: the rename breaks nothing when
	// the file leaves a relation of that name, a view on the new one.
	stands string
}

// observe compares the catalog before (b) and after (a) a statement, for
// each table that existed before the file. watched says whether the
// statement ran in a transaction whose locks and scans a shows; held maps
// tables to the statement of that transaction that locked them against
// writes, and observe adds the tables this statement so locked.
func (f *fileRun) observe(st statement, b, a snapshot, watched bool, held map[uint32]statement) []finding {
	var out []finding
	add := func(fd finding) {
		// One finding per rule: a foreign key checks two tables.
		if i := slices.IndexFunc(out, func(o finding) bool { return o.rule == fd.rule && o.stands == "" }); i >= 0 && fd.stands == "" {
			out[i].what += "; and " + fd.what
			return
		}
		out = append(out, fd)
	}
	for _, oid := range f.pre.tables {
		t0, was := b.rels[oid]
		if !was {
			continue // dropped by an earlier statement, and reported there
		}
		t1, is := a.rels[oid]
		if !is {
			add(dropped("table " + t0.name))
			continue
		}
		switch {
		case t1.schema != t0.schema:
			fd := renamed("table "+t0.name, "moves", "to schema "+t1.schema)
			fd.stands = t0.name
			add(fd)
		case t1.name != t0.name:
			fd := renamed("table "+t0.name, "renames", "to "+t1.name)
			fd.stands = t0.name
			add(fd)
		}
		for _, fd := range f.columnChanges(oid, t0.name, b, a) {
			add(fd)
		}
		rewritten := t1.filenode != t0.filenode && t0.filenode != 0
		if rewritten {
			add(rewriteFinding(oid, t0.name, b, a))
		}
		if !watched {
			continue
		}
		built := builtIndexes(oid, b, a, rewritten)
		if len(built) > 0 {
			add(finding{rule: RuleIndex,
				what: fmt.Sprintf("%s on %s, a table that existed before this file, inside a transaction (without CONCURRENTLY)", strings.Join(built, ", "), t0.name),
				why:  fmt.Sprintf("the build reads every row of %s while the transaction holds %s on it (minutes on a big table): %s %s.", t0.name, t1.lock.held(), t1.lock.blocks(t0.name), untilCommit),
				safe: safeIndex})
		}
		// A rewrite or an index build reads the table too: that scan is theirs.
		if !rewritten && len(built) == 0 && scanned(oid, b, a) && t1.lock >= shareLock {
			causes, notNull := validations(oid, b, a)
			if by, ok := held[oid]; ok && len(causes) == 0 && t0.lock >= shareLock {
				add(finding{rule: RuleHeldLock,
					what: fmt.Sprintf("reads rows of %s, a table that existed before this file, while the file's transaction holds the %s lock that line %d took (%s)", t0.name, t1.lock, by.line, by.first),
					why:  fmt.Sprintf("a lock is held until the transaction commits, so %s from line %d to the end of the file, however long this statement reads (a backfill of a big table: minutes).", t1.lock.blocks(t0.name), by.line),
					safe: safeHeldLock})
			} else {
				add(validateFinding(t0.name, t1.lock, causes, notNull))
			}
		}
		if t1.lock >= shareLock && t0.lock < shareLock {
			held[oid] = st
		}
	}
	return out
}

// dropped is the finding for a table or column of the release before that a
// statement drops.
func dropped(subject string) finding {
	return finding{rule: RuleDrop, what: "drops " + subject + ", which existed before this file", why: fmt.Sprintf(whyDrop, subject), safe: safeDrop}
}

// renamed is the finding for a table or column of the release before that a
// statement renames (or moves).
func renamed(subject, verb, to string) finding {
	return finding{rule: RuleRename, what: verb + " " + subject + ", which existed before this file, " + to, why: fmt.Sprintf(whyRename, subject), safe: safeRename}
}

// columnChanges finds the renamed and dropped columns of table that existed
// before the file.
func (f *fileRun) columnChanges(table uint32, name string, b, a snapshot) []finding {
	var out []finding
	for k := range f.pre.cols {
		c0, was := b.cols[k]
		c1, is := a.cols[k]
		if k.table != table || !was || !is || c0.dropped {
			continue
		}
		col := name + "." + c0.name
		switch {
		case c1.dropped:
			out = append(out, dropped("column "+col))
		case c1.name != c0.name:
			out = append(out, renamed("column "+col, "renames", "to "+c1.name))
		}
	}
	slices.SortFunc(out, func(x, y finding) int { return strings.Compare(x.what, y.what) })
	return out
}

// rewriteFinding says how a table came to be rewritten: a column's new type,
// a new column's computed value, or a command that replaces storage.
func rewriteFinding(table uint32, name string, b, a snapshot) finding {
	fd := finding{rule: RuleRewrite,
		why: fmt.Sprintf("a rewrite holds %s on %s while it copies every row and rebuilds every index (minutes on a big table): %s %s.", accessExclusiveLock.held(), name, accessExclusiveLock.blocks(name), untilCommit)}
	var changed, added []string
	for k, c1 := range a.cols {
		if k.table != table || c1.dropped {
			continue
		}
		switch c0, ok := b.cols[k]; {
		case !ok:
			added = append(added, c1.name)
		case c0.typ != c1.typ:
			changed = append(changed, fmt.Sprintf("%s from %s to %s", c1.name, c0.typ, c1.typ))
		}
	}
	slices.Sort(changed)
	slices.Sort(added)
	switch {
	case len(changed) > 0:
		fd.what = fmt.Sprintf("rewrites %s, a table that existed before this file, to change the type of column %s", name, strings.Join(changed, ", "))
		fd.safe = safeTypeChange
	case len(added) > 0:
		fd.what = fmt.Sprintf("rewrites %s, a table that existed before this file, to add column %s, whose default or generated value is computed for every row (not a constant)", name, strings.Join(added, ", "))
		fd.safe = safeDefault
	default:
		fd.what = fmt.Sprintf("rewrites %s, a table that existed before this file (its storage is replaced)", name)
		fd.safe = safeRewrite
	}
	return fd
}

// builtIndexes names the indexes of table that a statement built, or rebuilt
// other than by rewriting the table.
func builtIndexes(table uint32, b, a snapshot, rewritten bool) []string {
	var built []string
	for oid, r := range a.rels {
		if r.table != table {
			continue
		}
		switch r0, ok := b.rels[oid]; {
		case !ok:
			built = append(built, "builds index "+r.name)
		case r0.filenode != r.filenode && !rewritten:
			built = append(built, "rebuilds index "+r.name)
		}
	}
	slices.Sort(built)
	return built
}

// scanned reports whether a statement began a scan of table or of one of
// its indexes.
func scanned(table uint32, b, a snapshot) bool {
	for oid, r := range a.rels {
		if (oid == table || r.table == table) && r.scans > b.rels[oid].scans {
			return true
		}
	}
	return false
}

// validations says what a statement validated on table that takes a lock
// blocking writes by itself: constraints added validated on it (or, for a
// foreign key, referencing it), columns set NOT NULL. (VALIDATE CONSTRAINT
// takes a weaker lock: when it reads under a strong one, a statement before
// it took that.)
func validations(table uint32, b, a snapshot) (causes []string, notNull bool) {
	for oid, c := range a.cons {
		if _, existed := b.cons[oid]; existed || c.table != table && c.refs != table || !c.validated {
			continue
		}
		switch {
		case c.kind == "n":
			notNull = true // PostgreSQL 18 records NOT NULL as a constraint: the column says it below
		case c.table != table:
			causes = append(causes, fmt.Sprintf("add foreign key %s of %s, which references it", c.name, relName(a, c.table)))
		default:
			causes = append(causes, fmt.Sprintf("add %s %s", constraintKinds[c.kind], c.name))
		}
	}
	for k, c1 := range a.cols {
		if c0, ok := b.cols[k]; ok && k.table == table && c1.notNull && !c0.notNull {
			causes = append(causes, "set column "+c1.name+" NOT NULL")
			notNull = true
		}
	}
	slices.Sort(causes)
	return causes, notNull
}

// validateFinding is the lesson for a table read in full under a lock that
// blocks writes, for the causes validations found.
func validateFinding(name string, lock lockMode, causes []string, notNull bool) finding {
	what := fmt.Sprintf("reads every row of %s, a table that existed before this file, under %s", name, lock.held())
	if len(causes) > 0 {
		what += ", to " + strings.Join(causes, " and ")
	}
	var safe []string
	if notNull {
		safe = append(safe, "For NOT NULL: "+safeNotNull)
	}
	if len(causes) > 0 && (!notNull || len(causes) > 1) {
		safe = append(safe, "For a constraint: "+safeConstraint)
	}
	if len(safe) == 0 {
		safe = append(safe, safeValidate)
	}
	return finding{rule: RuleValidate, what: what,
		why:  fmt.Sprintf("it holds the lock while it reads the whole table (as long as a full scan takes): %s %s.", lock.blocks(name), untilCommit),
		safe: strings.Join(safe, " ")}
}

var constraintKinds = map[string]string{"c": "check constraint", "f": "foreign key", "u": "unique constraint", "p": "primary key", "x": "exclusion constraint", "t": "constraint trigger"}

func relName(s snapshot, oid uint32) string {
	if r, ok := s.rels[oid]; ok {
		return r.name
	}
	return fmt.Sprintf("(oid %d)", oid)
}
