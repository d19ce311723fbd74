package domain

import (
	"context"
	"database/sql"
	"fmt"
	"net/mail"

	"golang.org/x/crypto/bcrypt"
)

const userColumns = "id, name, display_name, email, admin, created"

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Name, &u.DisplayName, &u.Email, &u.Admin, &u.Created)
	return u, err
}

// CreateUser adds a user, hashing the password with bcrypt. A taken name is
// ErrConflict; a bad name, e-mail or password is ErrInvalid.
func (s *Store) CreateUser(ctx context.Context, nu NewUser) (User, error) {
	if err := checkNewUser(nu); err != nil {
		return User{}, err
	}
	hash, err := s.hashPassword(nu.Password)
	if err != nil {
		return User{}, err
	}
	if nu.DisplayName == "" {
		nu.DisplayName = nu.Name
	}
	row := s.db.QueryRowContext(ctx, s.q(`INSERT INTO users (name, display_name, email, password_hash, admin, created)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING `+userColumns),
		nu.Name, nu.DisplayName, nu.Email, hash, nu.Admin, s.now())
	u, err := scanUser(row)
	return u, mapErr(err, "domain: create user "+nu.Name)
}

func checkNewUser(nu NewUser) error {
	if !ValidUserName(nu.Name) {
		return fmt.Errorf("%w: user name %q", ErrInvalid, nu.Name)
	}
	if nu.Email != "" {
		if _, err := mail.ParseAddress(nu.Email); err != nil {
			return fmt.Errorf("%w: e-mail %q", ErrInvalid, nu.Email)
		}
	}
	if len(nu.Password) > 72 {
		return fmt.Errorf("%w: password longer than 72 bytes (bcrypt's limit)", ErrInvalid)
	}
	return checkText("display name", nu.DisplayName, false, MaxNameLen)
}

// hashPassword is bcrypt at the configured cost; "" stays "" (no password).
func (s *Store) hashPassword(pw string) (string, error) {
	if pw == "" {
		return "", nil
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), s.cfg.BcryptCost)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return string(h), nil
}

// SetPassword replaces a user's password ("" removes it).
func (s *Store) SetPassword(ctx context.Context, userID int64, password string) error {
	if len(password) > 72 {
		return fmt.Errorf("%w: password longer than 72 bytes (bcrypt's limit)", ErrInvalid)
	}
	hash, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.q("UPDATE users SET password_hash = ? WHERE id = ?"), hash, userID)
	return mapErr(oneRow(res, err), fmt.Sprintf("domain: set password of user %d", userID))
}

// UserByID returns a user; ErrNotFound if there is none.
func (s *Store) UserByID(ctx context.Context, id int64) (User, error) {
	u, err := scanUser(s.queryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = ?", id))
	return u, mapErr(err, fmt.Sprintf("domain: user %d", id))
}

// UserByName returns a user; ErrNotFound if there is none.
func (s *Store) UserByName(ctx context.Context, name string) (User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q("SELECT "+userColumns+" FROM users WHERE name = ?"), name))
	return u, mapErr(err, fmt.Sprintf("domain: user %q", name))
}

// oneRow turns "no row affected" into ErrNotFound.
func oneRow(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}
