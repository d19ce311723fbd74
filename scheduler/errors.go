package scheduler

import "errors"

// Errors returned by the Scheduler, wrapped with context; test with
// errors.Is. Store errors (cp.ErrNoLeader, ...) are passed through
// wrapped as well.
var (
	// ErrNotFound: no job with that ID.
	ErrNotFound = errors.New("scheduler: job not found")
	// ErrInvalid: a malformed job, schedule or argument.
	ErrInvalid = errors.New("scheduler: invalid")
	// ErrNoStore: a RunOncePerCluster job on a scheduler without a store.
	ErrNoStore = errors.New("scheduler: no consistent store for clustered jobs")
	// ErrNoRunner: run-now asked of a job whose runner no live node has
	// registered (the request is kept; it runs once one does).
	ErrNoRunner = errors.New("scheduler: no live node has the job's runner")
	// ErrConflict: the job was changed concurrently too many times in a
	// row; try again.
	ErrConflict = errors.New("scheduler: concurrent changes to the job")
	// ErrClosed: the scheduler is closed.
	ErrClosed = errors.New("scheduler: closed")
)
