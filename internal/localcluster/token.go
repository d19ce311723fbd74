package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/internal/domain"
)

// AdminTokenFile is the file in a local cluster's directory that holds an
// administrator's access token (mode 0600): the shoal commands use it when
// they are given no credentials.
const AdminTokenFile = "admin-token"

// adminTokenName names the token ProvisionAdminToken makes; each call
// replaces the previous one.
const adminTokenName = "local-cluster"

// DBURL is the database of a local cluster's nodes: the value of a --db
// flag in args, else dir/shoal.db (the nodes' default: shoal.db beside
// their data directories, which are dir/nodeN).
func DBURL(dir string, args []string) string {
	url := ""
	for i, a := range args {
		switch {
		case a == "--db" && i+1 < len(args):
			url = args[i+1]
		case strings.HasPrefix(a, "--db="):
			url = strings.TrimPrefix(a, "--db=")
		}
	}
	if url == "" {
		url = filepath.Join(dir, "shoal.db")
	}
	return url
}

// ProvisionAdminToken makes sure the database at dbURL has the
// administrator user (created without a password, so usable with access
// tokens only, when there is no such user), replaces its "local-cluster"
// access token with a new one — as 'shoal token create' does — writes it
// to dir/admin-token with mode 0600, and returns it. A user of that name
// who is not an administrator is an error.
func ProvisionAdminToken(ctx context.Context, dbURL, dir, user string) (string, error) {
	st, err := domain.Open(ctx, domain.Config{URL: dbURL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return "", fmt.Errorf("opening %s for the administrator's token: %w", dbURL, err)
	}
	defer st.Close()
	u, err := st.UserByName(ctx, user)
	if errors.Is(err, domain.ErrNotFound) {
		u, err = st.CreateUser(ctx, domain.NewUser{Name: user, DisplayName: "Administrator", Admin: true})
	}
	if err != nil {
		return "", fmt.Errorf("administrator %q in %s: %w", user, dbURL, err)
	}
	if !u.Admin {
		return "", fmt.Errorf("user %q in %s is not an administrator: no token for the local cluster", user, dbURL)
	}
	if err := st.RevokeToken(ctx, u.ID, adminTokenName); err != nil && !errors.Is(err, domain.ErrNotFound) {
		return "", err
	}
	tok, err := st.CreateToken(ctx, u.ID, adminTokenName)
	if err != nil {
		return "", err
	}
	if err := WriteSecret(filepath.Join(dir, AdminTokenFile), []byte(tok+"\n")); err != nil {
		return "", err
	}
	return tok, nil
}

// WriteSecret writes b to path with mode 0600, atomically (a temporary
// file renamed over it), so that no reader sees a partial file and no
// one else can read it at any moment.
func WriteSecret(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// ReadAdminToken reads dir/admin-token: "" without error when there is
// none.
func ReadAdminToken(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(b)), err
}
