package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLibraryName(t *testing.T) {
	for path, want := range map[string]string{
		"example.com/acme/billing":     "billing",
		"example.com/acme/billing/v2":  "billing",
		"example.com/acme/billing/v10": "billing",
		"billing":                      "billing",
		"example.com/acme/v2ray":       "v2ray",
	} {
		require.Equal(t, want, libraryName(path), path)
	}
}

func TestCheckName_AcceptsLowercaseIdentifiers(t *testing.T) {
	for _, path := range []string{
		"example.com/acme/billing",
		"example.com/acme/billing/v2",
		"example.com/acme/my_lib",
		"example.com/acme/_audit",
		"example.com/acme/ledger2",
		"example.com/acme/" + strings.Repeat("a", maxNameLen),
	} {
		require.NoError(t, checkName(path), path)
	}
}

func TestCheckName_RefusesWithSuggestions(t *testing.T) {
	for _, tc := range []struct {
		path    string
		problem string
		suggest []string
	}{
		{"example.com/acme/my-app", "not a Go identifier", []string{"example.com/acme/my_app", "example.com/acme/myapp"}},
		{"github.com/acme/go-billing", "not a Go identifier", []string{"github.com/acme/billing", "github.com/acme/gobilling"}},
		{"github.com/acme/billing-go/v3", "not a Go identifier", []string{"github.com/acme/billing/v3"}},
		{"example.com/acme/MyApp", "uppercase", []string{"example.com/acme/myapp"}},
		{"example.com/acme/2fa", "not a Go identifier", []string{"example.com/acme/lib2fa"}},
		{"example.com/acme/type", "Go keyword", []string{"example.com/acme/typelib"}},
		{"example.com/acme/string", "predeclared", []string{"example.com/acme/stringlib"}},
		{"example.com/acme/main", "command", []string{"example.com/acme/mainlib"}},
		{"example.com/acme/pg_audit", "pg_", []string{"example.com/acme/audit"}},
		{"example.com/acme/information_schema", "system schema", []string{"example.com/acme/information_schemalib"}},
		{"example.com/acme/billing_test", "_test", []string{"example.com/acme/billing"}},
		{"example.com/acme/" + strings.Repeat("a", maxNameLen+1), "63-byte", nil},
	} {
		err := checkName(tc.path)
		require.Error(t, err, tc.path)
		require.ErrorContains(t, err, tc.problem, tc.path)
		for _, s := range tc.suggest {
			require.ErrorContains(t, err, s, tc.path)
		}
	}
}

func TestCheckModulePath(t *testing.T) {
	for _, bad := range []string{"", "/billing", "example.com//billing", "example.com/../billing", "example.com/acme billing", "example.com/acme/"} {
		require.Error(t, checkModulePath(bad), bad)
	}
	require.NoError(t, checkModulePath("example.com/acme/billing/v2"))
}

func TestImportName(t *testing.T) {
	for path, want := range map[string]string{
		"context":                             "context",
		"github.com/jackc/pgx/v5":             "pgx",
		"github.com/jackc/pgx/v5/pgxpool":     "pgxpool",
		"gopkg.in/yaml.v2":                    "yaml",
		"github.com/mattn/go-sqlite3":         "sqlite3",
		"github.com/stretchr/testify/require": "require",
	} {
		require.Equal(t, want, importName(path), path)
	}
}
