package cluster

import (
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// Where peer traffic is refused (the label "listener" of
// shoal_peer_refused_total, beside the peer RPC's and raft's) and why
// (the label "reason"). The sets are fixed by the code, never taken from
// what a peer sent, so the counters stay few.
const (
	// ListenerGossip: memberlist's packets and streams.
	ListenerGossip = "gossip"
	// ListenerBus: bus messages and push/pull exchanges.
	ListenerBus = "bus"
	// ListenerKeyring: keyring operations over the peer RPC.
	ListenerKeyring = "keyring"
	// ListenerRPC: the peer RPC's connections (mutual TLS, admission).
	ListenerRPC = "rpc"

	// ReasonUnknownKey: encrypted gossip that none of this node's keys
	// opens.
	ReasonUnknownKey = "unknown_key"
	// ReasonNotEncrypted: plaintext gossip to a node that encrypts.
	ReasonNotEncrypted = "not_encrypted"
	// ReasonNoKeyHere: encrypted gossip to a node without a key.
	ReasonNoKeyHere = "no_key_here"
	// ReasonTLSMismatch: a node that runs the peer RPC without TLS
	// gossiping to a node that runs it with TLS, or the other way round
	// (a 'shoal node --join' without a certificate).
	ReasonTLSMismatch = "tls_mismatch"
	// ReasonNotMember (tlsutil's): a bus message or exchange from a node
	// that is not a current (alive) member.
	ReasonNotMember = tlsutil.ReasonNotMember
	// ReasonIncarnation: a bus message whose sender incarnation is not
	// the one the sender's gossiped metadata carries.
	ReasonIncarnation = "incarnation"
	// ReasonLimit: a bus message or exchange over a per-sender limit
	// (topics, topic name length, messages held behind a gap).
	ReasonLimit = "limit"
	// ReasonUnsealed: a keyring operation that none of this node's gossip
	// keys opens, or too old.
	ReasonUnsealed = "unsealed"
)

// refusals counts refused peer traffic in the node's shared
// tlsutil.Refusals and logs each refusal with the peer's address and why,
// at most refusalLogsPerSecond lines a second per listener and reason, so
// that a flood of refused traffic cannot flood the log too. Safe for
// concurrent use.
type refusals struct {
	counts *tlsutil.Refusals
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	windows map[tlsutil.RefusalKey]*logWindow
}

type logWindow struct {
	start   time.Time // of the current one-second window
	logged  int       // lines logged in it
	skipped uint64    // refusals not logged since the last line
}

const refusalLogsPerSecond = 5

func newRefusals(counts *tlsutil.Refusals, log *slog.Logger, now func() time.Time) *refusals {
	return &refusals{counts: counts, log: log, now: now, windows: map[tlsutil.RefusalKey]*logWindow{}}
}

// refuse counts one refusal and logs it with the peer's address and
// name, when known, and detail.
func (r *refusals) refuse(listener, reason, addr, peer, detail string) {
	r.counts.Add(listener, reason)
	key := tlsutil.RefusalKey{Listener: listener, Reason: reason}
	r.mu.Lock()
	w := r.windows[key]
	if w == nil {
		w = &logWindow{}
		r.windows[key] = w
	}
	now := r.now()
	if now.Sub(w.start) >= time.Second {
		w.start, w.logged = now, 0
	}
	log := w.logged < refusalLogsPerSecond
	var skipped uint64
	if log {
		w.logged++
		skipped, w.skipped = w.skipped, 0
	} else {
		w.skipped++
	}
	r.mu.Unlock()
	if !log {
		return
	}
	args := []any{"listener", listener, "reason", reason, "remote", addr}
	if peer != "" {
		args = append(args, "peer", peer)
	}
	args = append(args, "detail", detail)
	if skipped > 0 {
		args = append(args, "not_logged_before", skipped)
	}
	r.log.Warn("cluster: refused peer traffic", args...)
}

// ListenerRaft: raft's connections and requests (package cp's transport).
const ListenerRaft = "raft"

// RefusalLog counts refusals in a tlsutil.Refusals and logs them,
// rate-limited, as a Node does its own: for the listeners of a process
// that are not the Node's (raft's transport). Safe for concurrent use.
type RefusalLog struct{ r *refusals }

// NewRefusalLog counts in counts and logs to log.
func NewRefusalLog(counts *tlsutil.Refusals, log *slog.Logger) *RefusalLog {
	return &RefusalLog{newRefusals(counts, log, time.Now)}
}

// Refuse counts one refusal and logs it (at most a few lines a second per
// listener and reason) with the peer's address, its name if known, and
// detail.
func (l *RefusalLog) Refuse(listener, reason, addr, peer, detail string) {
	l.r.refuse(listener, reason, addr, peer, detail)
}
