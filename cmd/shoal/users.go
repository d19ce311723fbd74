package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/shoal-dev/shoal/internal/domain"
)

const userUsage = `usage:
  shoal user add NAME [--password P | --password-stdin] [--admin] [--email E] [--display-name D]
  shoal user grant NAME PROJECT[/REPO] READ|WRITE|ADMIN|NONE
  shoal token create USER TOKEN-NAME      prints the token (the only time it is shown)
  shoal token revoke USER TOKEN-NAME

Each takes --db and --data-dir to find the database (default
<data-dir>/shoal.db, the shared SQLite file of 'shoal up').
`

// openDomain opens the database named by --db / --data-dir.
func openDomain(ctx context.Context, db, dataDir string) (*domain.Store, error) {
	url := dbURL(db, dataDir)
	st, err := domain.Open(ctx, domain.Config{URL: url, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", url, err)
	}
	return st, nil
}

// operatorFlags are the flags every user/token command takes.
func operatorFlags(name string, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, userUsage) }
	db := fs.String("db", "", "database: a postgres:// URL or a SQLite file (default <data-dir>/"+dbFileName+")")
	dataDir := fs.String("data-dir", "shoal-data", "cluster directory holding the shared SQLite database")
	return fs, db, dataDir
}

func runUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("user: want add or grant\n%s", userUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "add":
		return userAdd(ctx, args[1:], stdin, stdout, stderr)
	case "grant":
		return userGrant(ctx, args[1:], stdout, stderr)
	}
	return usagef("user: unknown subcommand %q\n%s", args[0], userUsage)
}

func userAdd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, db, dataDir := operatorFlags("user add", stderr)
	var nu domain.NewUser
	var fromStdin bool
	fs.StringVar(&nu.Password, "password", "", "the password (prefer --password-stdin: arguments are visible to other users)")
	fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	fs.BoolVar(&nu.Admin, "admin", false, "a global administrator")
	fs.StringVar(&nu.Email, "email", "", "e-mail address")
	fs.StringVar(&nu.DisplayName, "display-name", "", "display name (default: the name)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("user add: want exactly one NAME, got %d arguments", len(pos))
	}
	nu.Name = pos[0]
	if fromStdin {
		line, err := readLine(stdin)
		if err != nil {
			return fmt.Errorf("reading the password: %w", err)
		}
		nu.Password = line
	}
	if nu.DisplayName == "" {
		nu.DisplayName = nu.Name
	}
	st, err := openDomain(ctx, *db, *dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.CreateUser(ctx, nu)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created user %s (id %d, admin %v)\n", u.Name, u.ID, u.Admin)
	return nil
}

func userGrant(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, db, dataDir := operatorFlags("user grant", stderr)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 {
		return usagef("user grant: want NAME PROJECT[/REPO] PERMISSION")
	}
	perm := domain.PermNone
	if !strings.EqualFold(pos[2], "none") {
		if perm, err = domain.ParsePerm(pos[2]); err != nil {
			return usagef("user grant: %v", err)
		}
	}
	project, repo, _ := strings.Cut(pos[1], "/")
	st, err := openDomain(ctx, *db, *dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.UserByName(ctx, pos[0])
	if err != nil {
		return fmt.Errorf("user %q: %w", pos[0], err)
	}
	if err := st.Grant(ctx, u.ID, project, repo, perm); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s has %v on %s\n", u.Name, perm, pos[1])
	return nil
}

func runToken(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "revoke") {
		return usagef("token: want create or revoke\n%s", userUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs, db, dataDir := operatorFlags("token "+args[0], stderr)
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("token %s: want USER TOKEN-NAME", args[0])
	}
	st, err := openDomain(ctx, *db, *dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.UserByName(ctx, pos[0])
	if err != nil {
		return fmt.Errorf("user %q: %w", pos[0], err)
	}
	if args[0] == "revoke" {
		if err := st.RevokeToken(ctx, u.ID, pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s's token %s\n", u.Name, pos[1])
		return nil
	}
	tok, err := st.CreateToken(ctx, u.ID, pos[1])
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
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
