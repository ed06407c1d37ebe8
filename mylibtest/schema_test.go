package mylibtest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/sqltmpl"
)

func TestSchemaName_ValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, test := range []string{
		"", "TestX", "TestX/sub_test", "Test Ünïcode / spaces & dashes-too", "___", "9lives",
		"Test" + strings.Repeat("VeryLong", 20) + "/and/deep",
	} {
		for range 100 {
			name, err := schemaName(test)
			require.NoError(t, err)
			require.NoError(t, sqltmpl.ValidateSchema(name), "from %q", test)
			require.True(t, strings.HasPrefix(name, SchemaPrefix), name)
			require.False(t, seen[name], "%s made twice", name)
			seen[name] = true
		}
	}
	name, err := schemaName("TestSignup/new user")
	require.NoError(t, err)
	require.Regexp(t, `^`+SchemaPrefix+`testsignup_new_user_[0-9a-f]{12}$`, name, "the test's name is readable in its schema's")
}
