package cp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
)

// A snapshot file is a consistent copy of the whole store:
//
//	"SHOALSNAP" | version u8 | header length u32 | header (msgpack SnapshotInfo) |
//	state (msgpack, what the FSM writes to raft's own snapshots) | SHA-256 of all before
//
// Integers are big-endian. The checksum is checked, and the state decoded,
// before anything is restored.
const (
	snapMagic   = "SHOALSNAP"
	snapVersion = 1
	// MaxSnapshotSize bounds a snapshot file read back (1 GiB).
	MaxSnapshotSize = 1 << 30
)

// ErrNotLeader: an operation only the leader performs (Snapshot, Restore,
// RemovePeer) was asked of another node. The error names the leader when
// one is known; Status().Leader says which it is.
var ErrNotLeader = errors.New("cp: not the leader")

// ErrBadSnapshot: a snapshot file is damaged or not a snapshot.
var ErrBadSnapshot = errors.New("cp: not a valid snapshot")

// SnapshotInfo describes a snapshot: where in the log it was taken, when,
// by which leader, and what it holds.
type SnapshotInfo struct {
	Index  uint64    `msgpack:"i" json:"index"`
	Term   uint64    `msgpack:"t" json:"term"`
	Taken  time.Time `msgpack:"w" json:"taken"`
	Leader string    `msgpack:"l" json:"leader"`
	Keys   int       `msgpack:"k" json:"keys"`
	Leases int       `msgpack:"s" json:"leases"`
}

// Snapshot writes a consistent point-in-time copy of the store to w: it
// is taken on the leader once it has confirmed its leadership with a
// quorum and caught up, so it holds every write acknowledged before the
// call began. ErrNotLeader on another node.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	if err := s.LeaderOnly(); err != nil {
		return SnapshotInfo{}, err
	}
	if err := s.verifyLeader(ctx); err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: %v", ErrNoLeader, err)
	}
	s.mu.Lock()
	ready := s.readyTerm == s.raft.CurrentTerm()
	s.mu.Unlock()
	if !ready {
		return SnapshotInfo{}, fmt.Errorf("%w: the new leader is still catching up; try again", ErrNoLeader)
	}
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return SnapshotInfo{}, err
	}
	st := snap.(*fsmSnapshot).st
	info := SnapshotInfo{Index: max(s.raft.AppliedIndex(), st.maxIndex()), Term: s.raft.CurrentTerm(),
		Taken: s.cfg.Now().UTC(), Leader: s.name, Keys: len(st.Data), Leases: len(st.Leases)}
	body, err := encodeSnapshot(info, &st)
	if err != nil {
		return SnapshotInfo{}, err
	}
	_, err = w.Write(body)
	return info, err
}

// maxIndex is the largest version or fencing token in the state: no
// greater than the index the state was taken at.
func (st *snapshotState) maxIndex() uint64 {
	var m uint64
	for _, e := range st.Data {
		m = max(m, e.Version)
	}
	for _, l := range st.Leases {
		m = max(m, l.Token)
	}
	return m
}

func encodeSnapshot(info SnapshotInfo, st *snapshotState) ([]byte, error) {
	hdr, err := msgpack.Marshal(&info)
	if err != nil {
		return nil, err
	}
	state, err := msgpack.Marshal(st)
	if err != nil {
		return nil, err
	}
	b := append([]byte(snapMagic), snapVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(hdr)))
	b = append(append(b, hdr...), state...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// DecodeSnapshot checks a snapshot file and returns its description and
// its state, ready for raft. ErrBadSnapshot if it is not a whole, intact
// snapshot.
func DecodeSnapshot(b []byte) (SnapshotInfo, []byte, error) {
	var info SnapshotInfo
	bad := func(why string) (SnapshotInfo, []byte, error) {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: %s", ErrBadSnapshot, why)
	}
	pre := len(snapMagic) + 1 + 4
	if len(b) < pre+sha256.Size || string(b[:len(snapMagic)]) != snapMagic {
		return bad("it does not start like a shoal snapshot")
	}
	if b[len(snapMagic)] != snapVersion {
		return bad(fmt.Sprintf("unknown version %d", b[len(snapMagic)]))
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return bad("its checksum does not match (truncated or damaged)")
	}
	n := int(binary.BigEndian.Uint32(b[len(snapMagic)+1:]))
	if n > len(body)-pre {
		return bad("its header length exceeds the file")
	}
	if err := msgpack.Unmarshal(body[pre:pre+n], &info); err != nil {
		return bad("its header: " + err.Error())
	}
	state := body[pre+n:]
	var st snapshotState
	if err := msgpack.Unmarshal(state, &st); err != nil {
		return bad("its state: " + err.Error())
	}
	if st.maxIndex() > info.Index {
		return bad(fmt.Sprintf("it holds version %d, past its index %d", st.maxIndex(), info.Index))
	}
	return info, state, nil
}

// Restore replaces the whole store with a snapshot file's state, on the
// leader (ErrNotLeader elsewhere), through raft's user restore: the
// leader installs it and sends it to every follower, and the log index
// moves past the snapshot's, so versions and fencing tokens given after
// the restore are greater than any in it. The file is checked whole
// before anything changes (ErrBadSnapshot). Writes in flight on the
// leader fail; watches see the keys that changed.
func (s *Store) Restore(ctx context.Context, r io.Reader) (SnapshotInfo, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSnapshotSize+1))
	if err != nil {
		return SnapshotInfo{}, err
	}
	if len(b) > MaxSnapshotSize {
		return SnapshotInfo{}, fmt.Errorf("%w: larger than %d bytes", ErrBadSnapshot, MaxSnapshotSize)
	}
	info, state, err := DecodeSnapshot(b)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if err := s.LeaderOnly(); err != nil {
		return SnapshotInfo{}, err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: info.Index, Term: info.Term, Size: int64(len(state))}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if err := s.raft.Restore(meta, bytes.NewReader(state), timeout); err != nil {
		return SnapshotInfo{}, fmt.Errorf("cp: restoring the snapshot: %w", err)
	}
	s.log.Info("cp: restored a snapshot", "index", info.Index, "taken", info.Taken, "keys", info.Keys)
	return info, nil
}

// LeaderOnly returns ErrNotLeader, naming the leader, unless this node
// leads.
func (s *Store) LeaderOnly() error {
	if s.raft.State() == raft.Leader {
		return nil
	}
	if _, id := s.raft.LeaderWithID(); id != "" {
		return fmt.Errorf("%w: %s leads", ErrNotLeader, id)
	}
	return fmt.Errorf("%w: no leader is known yet", ErrNotLeader)
}

// Peer is a server of the raft configuration.
type Peer struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// Suffrage is voter or nonvoter.
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// Member is the server's state in the gossip membership (alive,
	// suspect, failed, left), or "" if it is not a member any more.
	Member string `json:"member"`
}

// Peers returns the raft configuration as this node knows it, sorted by
// name, with each server's membership state.
func (s *Store) Peers() ([]Peer, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leader := s.raft.LeaderWithID()
	states := map[string]cluster.MemberState{}
	for _, m := range s.cfg.Node.Members() {
		states[m.Name] = m.State
	}
	var out []Peer
	for _, sv := range f.Configuration().Servers {
		out = append(out, Peer{Name: string(sv.ID), Address: string(sv.Address), Suffrage: suffrageName(sv.Suffrage),
			Leader: sv.ID == leader, Member: string(states[string(sv.ID)])})
	}
	sortPeers(out)
	return out, nil
}

// ErrPeerAlive: RemovePeer was asked to remove a member that is alive;
// the leader would add it back at once.
var ErrPeerAlive = errors.New("cp: the peer is alive")

// RemovePeer removes a server that will not come back from the raft
// configuration at once, without waiting for VoterGrace; a healthy member
// then takes its place as a voter. Only on the leader (ErrNotLeader). A
// member alive in the gossip membership is refused (ErrPeerAlive); one
// not in the configuration is ErrNotFound.
func (s *Store) RemovePeer(ctx context.Context, name string) error {
	if err := s.LeaderOnly(); err != nil {
		return err
	}
	peers, err := s.Peers()
	if err != nil {
		return err
	}
	var p *Peer
	for i := range peers {
		if peers[i].Name == name {
			p = &peers[i]
		}
	}
	switch {
	case p == nil:
		return fmt.Errorf("%w: %q is not in the raft configuration", ErrNotFound, name)
	case p.Member == string(cluster.StateAlive) || p.Member == string(cluster.StateSuspect):
		return fmt.Errorf("%w: %s is %s in the cluster; stop it first (a live member is added back)", ErrPeerAlive, name, p.Member)
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if err := s.raft.RemoveServer(raft.ServerID(name), 0, timeout).Error(); err != nil {
		return fmt.Errorf("cp: removing %s: %w", name, err)
	}
	s.log.Info("cp: removed a peer by request", "peer", name)
	return nil
}

func sortPeers(ps []Peer) {
	slices.SortFunc(ps, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
}
