package tlsutil

import (
	"crypto/tls"
	"errors"
	"net"
	"sort"
	"sync"
)

// Why a peer's connection was refused: the label "reason" of
// shoal_peer_refused_total.
const (
	// ReasonNotTLS: the peer did not speak TLS (a plaintext client).
	ReasonNotTLS = "not_tls"
	// ReasonHandshake: the TLS handshake failed otherwise (an older TLS
	// version, a timeout, a broken connection).
	ReasonHandshake = "handshake"
	// ReasonNoCertificate: the peer presented no certificate.
	ReasonNoCertificate = "no_certificate"
	// ReasonUnknownAuthority: its certificate is not signed by the
	// cluster's CA.
	ReasonUnknownAuthority = "unknown_authority"
	// ReasonExpired: its certificate has expired (or is not valid yet).
	ReasonExpired = "expired"
	// ReasonBadCertificate: its certificate is signed by the CA but is
	// not a node certificate (no node name, wrong key usage).
	ReasonBadCertificate = "bad_certificate"
	// ReasonNameMismatch: the name the peer claims (its RPC hello) is not
	// the name in its certificate.
	ReasonNameMismatch = "name_mismatch"
	// ReasonNotMember: the peer is not a member of the cluster (nor
	// became one while its connection waited).
	ReasonNotMember = "not_member"
	// ReasonRaftID: a raft request names a server other than the node
	// whose certificate the connection presented.
	ReasonRaftID = "raft_id_mismatch"
	// ReasonBusy: too many connections are already being authenticated.
	ReasonBusy = "busy"
	// ReasonBusyAddr: too many connections from the peer's IP address
	// are already being authenticated.
	ReasonBusyAddr = "busy_addr"
)

// RefusedError is a peer refused for Reason.
type RefusedError struct {
	Reason string
	Err    error
}

func (e *RefusedError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Reason classifies an error of a TLS handshake or of a peer's checks.
func Reason(err error) string {
	var re *RefusedError
	var rh tls.RecordHeaderError
	var ne net.Error
	switch {
	case errors.As(err, &re):
		return re.Reason
	case errors.As(err, &rh):
		return ReasonNotTLS
	case errors.As(err, &ne) && ne.Timeout():
		return ReasonHandshake
	}
	return ReasonHandshake
}

// Refusals counts refused peers by listener ("rpc", "raft") and reason.
// The zero value is ready; a nil *Refusals counts nothing. The keys come
// from this package's constants, so the map stays small whatever peers do.
type Refusals struct {
	mu sync.Mutex
	m  map[RefusalKey]uint64
}

// RefusalKey is a listener and a reason.
type RefusalKey struct{ Listener, Reason string }

// RefusalCount is one counter.
type RefusalCount struct {
	RefusalKey
	Count uint64
}

// Add counts one refusal.
func (r *Refusals) Add(listener, reason string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.m == nil {
		r.m = map[RefusalKey]uint64{}
	}
	r.m[RefusalKey{listener, reason}]++
	r.mu.Unlock()
}

// Get is one counter.
func (r *Refusals) Get(listener, reason string) uint64 {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[RefusalKey{listener, reason}]
}

// Snapshot is every counter, sorted.
func (r *Refusals) Snapshot() []RefusalCount {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	out := make([]RefusalCount, 0, len(r.m))
	for k, v := range r.m {
		out = append(out, RefusalCount{k, v})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Listener != out[j].Listener {
			return out[i].Listener < out[j].Listener
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}
