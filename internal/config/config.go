// Package config holds what the configurations of shoal's packages share:
// FieldError, the error with which a Config's Validate refuses a setting,
// naming the setting, so that a command line can name the flag bound to it.
package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// FieldError is a setting that a Config's Validate refuses. Field is the
// setting's path in the configuration: a field name, to which Within adds
// the names of the configurations that embed it as the error travels up
// ("MaxVoters", then "Store.MaxVoters"). Value is what it was set to and
// Want what would be accepted.
type FieldError struct {
	Pkg   string // the package that refused it, "cp"
	Field string
	Value any
	Want  string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s %s: want %s", e.Pkg, e.Field, Quote(e.Value), e.Want)
}

// Invalid returns a *FieldError.
func Invalid(pkg, field string, value any, want string) error {
	return &FieldError{Pkg: pkg, Field: field, Value: value, Want: want}
}

// Within prefixes the Field of the *FieldError in err, if there is one,
// with parent and a dot; other errors pass unchanged.
func Within(parent string, err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	c := *fe
	c.Field = parent + "." + c.Field
	return &c
}

// Quote formats a value as the messages show it: strings quoted, the rest
// as %v.
func Quote(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// CheckAddr checks a "host:port" address: a host, and a port from 0 to
// 65535. It returns the host and the port. The error says what is wrong
// in words that follow "want" in a FieldError.
func CheckAddr(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("host:port (%v)", err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, errors.New("host:port; the port must be a number from 0 to 65535")
	}
	if host == "" {
		return "", 0, errors.New("host:port; the host is missing")
	}
	return host, port, nil
}

// Addr validates an address setting: nil, or a *FieldError for field.
func Addr(pkg, field, addr string) error {
	if _, _, err := CheckAddr(addr); err != nil {
		return Invalid(pkg, field, addr, err.Error())
	}
	return nil
}
