package migrationcheck

import (
	"fmt"
	"slices"
	"strings"
)

// source is a migration file as written and as rendered for the scratch
// schema, line for line (rendering never adds or removes a line).
type source struct {
	name     string
	lines    []string
	rendered []string
	next     int // the first line after the statements located so far
}

func newSource(name, text, rendered string) *source {
	return &source{name: name, lines: strings.Split(text, "\n"), rendered: strings.Split(rendered, "\n")}
}

// statement is one statement of a file as goose runs it, with the
// allowances written right above it.
type statement struct {
	line   int    // its first line, from 1
	first  string // that line, as written
	allows []allowance
}

// locate finds the statement goose runs next in the file. goose starts a
// statement at a line that is neither blank nor a comment, and keeps every
// line up to the one that ends it; the lines between two statements are
// blank, comments or goose's annotations. So the lines above a statement,
// back to the end of the one before, are whole-line comments of the file's
// own: no string literal or statement text can stand among them.
func (s *source) locate(stmt, module string) (statement, error) {
	first, _, _ := strings.Cut(stmt, "\n")
	first = strings.TrimSpace(first)
	for i := s.next; i < len(s.rendered); i++ {
		if strings.TrimSpace(s.rendered[i]) != first {
			continue
		}
		st := statement{line: i + 1, first: strings.TrimSpace(s.lines[i])}
		for j := s.next; j < i; j++ {
			if a, ok := parseAllowance(s.lines[j], j+1, module); ok {
				st.allows = append(st.allows, a)
			}
		}
		s.next = i + strings.Count(stmt, "\n") + 1
		return st, nil
	}
	return statement{}, fmt.Errorf("migration check: %s: goose ran a statement that the check cannot find in the file after line %d (a file using ENVSUB?): %.80q", s.name, s.next, first)
}

// allowance is a comment "-- <module>:allow rule: reason".
type allowance struct {
	line   int
	text   string
	rule   Rule
	reason string
	used   bool
}

// allowPrefix follows "-- " and the module's name in an allowance; the
// library's checksum ignores the lines that start with the three.
const allowPrefix = ":allow"

// parseAllowance reads a whole-line comment "-- <module>:allow rule: reason".
func parseAllowance(line string, n int, module string) (allowance, bool) {
	text := strings.TrimSpace(line)
	rest, ok := strings.CutPrefix(text, "-- "+module+allowPrefix)
	if !ok {
		return allowance{}, false
	}
	rule, reason, _ := strings.Cut(rest, ":")
	return allowance{line: n, text: text, rule: Rule(strings.TrimSpace(rule)), reason: strings.TrimSpace(reason)}, true
}

// problem reports an allowance for an unknown rule, without a reason, or
// (once its statement ran) that allowed nothing.
func (a allowance) problem(file, module string) (Problem, bool) {
	p := Problem{File: file, Line: a.line, Statement: a.text}
	example := "-- " + module + allowPrefix + " " + string(RuleRewrite) + ": the table is empty in every install"
	switch {
	case !slices.Contains(Rules, a.rule):
		p.What = fmt.Sprintf("an allowance for an unknown rule %q: the rules are %s, written as: %s", a.rule, ruleList(), example)
	case a.reason == "":
		p.What = "an allowance must say why the statement cannot block any install, after the rule and a colon: " + example
	case !a.used:
		p.What = fmt.Sprintf("this allowance allows nothing: the statement below it breaks no rule %q. Remove it, or put it right above the statement it is for", a.rule)
	default:
		return Problem{}, false
	}
	return p, true
}

func ruleList() string {
	names := make([]string, len(Rules))
	for i, r := range Rules {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}
