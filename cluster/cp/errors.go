package cp

import (
	"errors"
	"fmt"
	"strconv"
)

// Errors returned by the Store. They are wrapped with context; test with
// errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("cp: key not found")
	// ErrVersionMismatch: a CompareAndSet or conditional Delete found
	// another version.
	ErrVersionMismatch = errors.New("cp: version mismatch")
	// ErrLeaseHeld: another holder has the lease and it has not expired.
	ErrLeaseHeld = errors.New("cp: lease held by another holder")
	// ErrLeaseLost: Renew or Release by a holder whose lease expired or was
	// taken over.
	ErrLeaseLost = errors.New("cp: lease lost")
	// ErrFenced: a fenced write carried a token that is no longer current.
	ErrFenced = errors.New("cp: fencing token rejected")
	// ErrNoLeader: no leader could be reached before the context ended.
	ErrNoLeader = errors.New("cp: no leader")
	// ErrIndeterminate: the request reached the leader but the answer was
	// lost (the connection broke, leadership moved, or the context ended
	// while waiting); the write may or may not have been applied.
	ErrIndeterminate = errors.New("cp: outcome unknown")
	// ErrTooLarge: a key or value exceeds the configured limits.
	ErrTooLarge = errors.New("cp: too large")
	// ErrInvalid: a malformed argument (empty key, zero TTL, ...).
	ErrInvalid = errors.New("cp: invalid argument")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("cp: store closed")
	// ErrDamagedLog: Open found the raft log (or raft's state read from
	// it) damaged in a way it does not repair; the error names the
	// directory. Moving DataDir/raft aside lets the node rejoin its group
	// with an empty log, fetching the state from the leader.
	ErrDamagedLog = errors.New("cp: the raft log is damaged beyond repair")
)

// Result codes carried in replies and FSM results.
const (
	codeVersionMismatch = "version_mismatch"
	codeLeaseHeld       = "lease_held"
	codeLeaseLost       = "lease_lost"
	codeFenced          = "fenced"
	codeNotFound        = "not_found"
	codeNotLeader       = "not_leader"
	codeIndeterminate   = "indeterminate"
	codeBadCommand      = "bad_command"
	codeInvalid         = "invalid"
)

var codeErrors = map[string]error{
	codeVersionMismatch: ErrVersionMismatch,
	codeLeaseHeld:       ErrLeaseHeld,
	codeLeaseLost:       ErrLeaseLost,
	codeFenced:          ErrFenced,
	codeNotFound:        ErrNotFound,
	codeIndeterminate:   ErrIndeterminate,
	codeInvalid:         ErrInvalid,
}

// codeError turns a result code back into its sentinel, wrapped with the
// message.
func codeError(code, msg string) error {
	if code == "" {
		return nil
	}
	if err, ok := codeErrors[code]; ok {
		return fmt.Errorf("%w: %s", err, msg)
	}
	return fmt.Errorf("cp: %s: %s", code, msg)
}

// errorCode is the reverse of codeError for the errors a leader reports.
func errorCode(err error) string {
	for code, e := range codeErrors {
		if errors.Is(err, e) {
			return code
		}
	}
	return "error"
}

func quote(s string) string { return strconv.Quote(s) }
func u64(v uint64) string   { return strconv.FormatUint(v, 10) }
