package proc

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// User is the OS account a child runs as when the test binary runs as root.
type User struct {
	Name     string
	UID, GID uint32
}

// DropRoot returns the OS user postgres when this process runs as root, which program (PostgreSQL,
// PgBouncer) refuses to run as, and nil otherwise.
func DropRoot(program string) (*User, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and %s refuses to run as root: "+
			"create an OS user named postgres (useradd --system postgres) or run the tests as another user: %w", program, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("OS user postgres has uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("OS user postgres has gid %q: %w", u.Gid, err)
	}
	return &User{Name: u.Username, UID: uint32(uid), GID: uint32(gid)}, nil
}

// Own gives u everything in dir, dir included. A nil u owns nothing and Own does nothing.
func (u *User) Own(dir string) error {
	if u == nil {
		return nil
	}
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(u.UID), int(u.GID))
	})
	if err != nil {
		return fmt.Errorf("hand %s to the OS user %s: %w", dir, u.Name, err)
	}
	return nil
}
