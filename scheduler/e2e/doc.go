// Package e2e holds the scheduler's multi-process tests: real 'shoal
// node' processes on loopback (internal/localcluster). It is apart from
// package scheduler so that the scheduler's own tests do not depend on the
// whole node.
package e2e
