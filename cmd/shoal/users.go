package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/domain"
)

// operatorSettings are those of every user and token command: where the
// database is.
type operatorSettings struct{ db, dataDir string }

func bindOperator(s *cli.Set) *operatorSettings {
	o := &operatorSettings{dataDir: "shoal-data"}
	s.String(&o.db, "db", "database: a postgres:// URL or a SQLite file (default <data-dir>/"+dbFileName+")")
	s.String(&o.dataDir, "data-dir", "cluster directory holding the shared SQLite database")
	return o
}

// open opens the database.
func (o *operatorSettings) open(ctx context.Context) (*domain.Store, error) {
	url := dbURL(o.db, o.dataDir)
	st, err := domain.Open(ctx, domain.Config{URL: url, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", url, err)
	}
	return st, nil
}

func init() {
	register(
		&command{name: "user add", args: "NAME", min: 1, max: 1, bind: bindUserAdd, summary: "Add a user."},
		&command{name: "user grant", args: "NAME PROJECT[/REPO] READ|WRITE|ADMIN|NONE", min: 3, max: 3, bind: bindUserGrant,
			summary: "Give a user a permission on a project or a repository (NONE takes it away)."},
		&command{name: "token create", args: "USER TOKEN-NAME", min: 2, max: 2, bind: bindToken("create"),
			summary: "Create an access token and print it (the only time it is shown)."},
		&command{name: "token revoke", args: "USER TOKEN-NAME", min: 2, max: 2, bind: bindToken("revoke"),
			summary: "Revoke an access token."},
	)
}

func bindUserAdd(s *cli.Set) runFunc {
	o := bindOperator(s)
	var nu domain.NewUser
	var fromStdin bool
	s.String(&nu.Password, "password", "the password (prefer --password-stdin: arguments are visible to other users)").Local()
	s.Bool(&fromStdin, "password-stdin", "read the password from the first line of standard input")
	s.Bool(&nu.Admin, "admin", "a global administrator")
	s.String(&nu.Email, "email", "e-mail address")
	s.String(&nu.DisplayName, "display-name", "display name (default: the name)")
	return func(ctx context.Context, sio stdio, args []string) error {
		nu.Name = args[0]
		if fromStdin {
			line, err := readLine(sio.in)
			if err != nil {
				return fmt.Errorf("reading the password: %w", err)
			}
			nu.Password = line
		}
		if nu.DisplayName == "" {
			nu.DisplayName = nu.Name
		}
		st, err := o.open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		u, err := st.CreateUser(ctx, nu)
		if err != nil {
			return err
		}
		fmt.Fprintf(sio.out, "created user %s (id %d, admin %v)\n", u.Name, u.ID, u.Admin)
		return nil
	}
}

func bindUserGrant(s *cli.Set) runFunc {
	o := bindOperator(s)
	return func(ctx context.Context, sio stdio, args []string) error {
		perm, err := domain.ParsePerm(args[2])
		if err != nil {
			return usagef("%v", err)
		}
		project, repo, _ := strings.Cut(args[1], "/")
		st, err := o.open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		u, err := st.UserByName(ctx, args[0])
		if err != nil {
			return fmt.Errorf("user %q: %w", args[0], err)
		}
		if err := st.Grant(ctx, u.ID, project, repo, perm); err != nil {
			return err
		}
		fmt.Fprintf(sio.out, "%s has %v on %s\n", u.Name, perm, args[1])
		return nil
	}
}

func bindToken(op string) func(*cli.Set) runFunc {
	return func(s *cli.Set) runFunc {
		o := bindOperator(s)
		return func(ctx context.Context, sio stdio, args []string) error {
			st, err := o.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			u, err := st.UserByName(ctx, args[0])
			if err != nil {
				return fmt.Errorf("user %q: %w", args[0], err)
			}
			if op == "revoke" {
				if err := st.RevokeToken(ctx, u.ID, args[1]); err != nil {
					return err
				}
				fmt.Fprintf(sio.out, "revoked %s's token %s\n", u.Name, args[1])
				return nil
			}
			tok, err := st.CreateToken(ctx, u.ID, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(sio.out, tok)
			return nil
		}
	}
}

// readLine reads one line, without its line ending.
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				break
			}
			b.WriteByte(buf[0])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(b.String(), "\r"), nil
}
