package pgtest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestStandby_FailoverThroughAMultiHostDSN(t *testing.T) {
	t.Parallel()
	primary, standby := Standby(t)
	dsn := SetParam(MultiHostDSN(t, primary.DSN(), standby.DSN()), "target_session_attrs", "read-write")

	before := clientConn(t, dsn)
	require.Equal(t, primary.Dir(), serverDir(t, before), "read-write should reach the primary")
	_, err := before.Exec(t.Context(), "CREATE TABLE events (v text); INSERT INTO events VALUES ('before')")
	require.NoError(t, err)

	readOnly := clientConn(t, standby.DSN())
	require.Eventually(t, func() bool {
		var n int
		return readOnly.QueryRow(t.Context(), "SELECT count(*) FROM events").Scan(&n) == nil && n == 1
	}, 10*time.Second, 10*time.Millisecond, "the standby did not replay the primary's write")
	_, err = readOnly.Exec(t.Context(), "INSERT INTO events VALUES ('on the standby')")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25006", pgErr.Code, "a standby refuses writes: read_only_sql_transaction")

	require.NoError(t, primary.Kill())
	require.NoError(t, standby.Promote(t.Context()))

	after := clientConn(t, dsn)
	require.Equal(t, standby.Dir(), serverDir(t, after), "read-write should reach the promoted standby")
	_, err = after.Exec(t.Context(), "INSERT INTO events VALUES ('after')")
	require.NoError(t, err)

	dirs := []string{primary.Dir(), standby.Dir()}
	require.NoError(t, standby.Stop())
	require.NoError(t, primary.Stop())
	for _, dir := range dirs {
		require.NoDirExists(t, dir)
	}
}

func TestMultiHostDSN_ListsEveryHostKeepsTheFirstsRest(t *testing.T) {
	tests := []struct {
		name      string
		dsns      []string
		wantHosts []string
		wantPorts []uint16
		wantRest  string // password and application_name, from the first DSN
	}{
		{
			name: "two pgtemp servers",
			dsns: []string{
				"postgres://postgres@/postgres?host=/dev/shm/pgtemp-1/sock&port=5432&sslmode=disable",
				"postgres://postgres@/postgres?host=/dev/shm/pgtemp-2/sock&port=5432&sslmode=disable",
			},
			wantHosts: []string{"/dev/shm/pgtemp-1/sock", "/dev/shm/pgtemp-2/sock"},
			wantPorts: []uint16{5432, 5432},
		},
		{
			name: "a URL over tcp, then keywords",
			dsns: []string{
				"postgres://postgres:secret@db1.example:5433/postgres?application_name=x",
				"host=db2.example port=5434 dbname=other user=someone",
			},
			wantHosts: []string{"db1.example", "db2.example"},
			wantPorts: []uint16{5433, 5434},
			wantRest:  "secret x",
		},
		{
			name: "keywords first, one of them a list already",
			dsns: []string{
				"host=/a,/b port=1,2 dbname=postgres user=postgres password=secret application_name=x",
				"host=/c port=3",
			},
			wantHosts: []string{"/a", "/b", "/c"},
			wantPorts: []uint16{1, 2, 3},
			wantRest:  "secret x",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := pgconn.ParseConfig(MultiHostDSN(t, tt.dsns...))
			require.NoError(t, err)
			hosts, ports := []string{cc.Host}, []uint16{cc.Port}
			for _, f := range cc.Fallbacks {
				if f.Host != hosts[len(hosts)-1] || f.Port != ports[len(ports)-1] { // TLS, then not, to one host
					hosts, ports = append(hosts, f.Host), append(ports, f.Port)
				}
			}
			require.Equal(t, tt.wantHosts, hosts)
			require.Equal(t, tt.wantPorts, ports)
			require.Equal(t, "postgres", cc.Database)
			require.Equal(t, "postgres", cc.User)
			require.Equal(t, tt.wantRest, strings.TrimSpace(cc.Password+" "+cc.RuntimeParams["application_name"]))
		})
	}
}

// serverDir returns the pgtemp directory of the server conn reached.
func serverDir(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var dataDir string
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT current_setting('data_directory')").Scan(&dataDir))
	return filepath.Dir(dataDir)
}
