package cp

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/beat"
)

// run is the store's one background goroutine: it bootstraps the group,
// prepares a new leader for reads, and, on the leader, keeps the raft
// configuration in line with the membership.
func (s *Store) run() {
	defer s.wg.Done()
	sub := s.cfg.Node.Subscribe()
	defer sub.Close()
	t := time.NewTimer(s.cfg.ReconcileInterval)
	defer t.Stop()
	s.tick()
	for {
		select {
		case <-s.stop:
			return
		case <-s.leaderCh:
		case <-sub.C():
		case <-t.C:
		}
		s.paceHeartbeats()
		s.tick()
		// The leader reconciles, and a node without raft state tries to
		// bootstrap, every ReconcileInterval; a follower has nothing to
		// do until it leads or the membership changes (both wake this
		// loop), so it looks only every ten intervals (each look asked
		// raft's main loop for its configuration: with the tick itself,
		// 4 of an idle follower's wake-ups a second).
		next := s.cfg.ReconcileInterval
		if s.raft.State() != raft.Leader && s.hasState() {
			next *= 10
		}
		t.Reset(beat.Until(next)) // on the process's beat: see package beat
	}
}

// paceHeartbeats gives raft the heartbeat timeout of this node's role
// (Config.LeaderHeartbeatTimeout): the longer one while it leads. run
// calls it whenever raft tells of a change of leadership; until then a
// new leader heartbeats at the followers' pace (more often, harmless) and
// a deposed one keeps the leader's timeout for one wait.
func (s *Store) paceHeartbeats() {
	if s.cfg.LeaderHeartbeatTimeout == 0 {
		return
	}
	// raft wants an ElectionTimeout no shorter: the leader holds no
	// election, so it takes the same.
	hb, el := s.cfg.Raft.HeartbeatTimeout, s.cfg.Raft.ElectionTimeout
	if s.raft.State() == raft.Leader {
		hb, el = s.cfg.LeaderHeartbeatTimeout, max(el, s.cfg.LeaderHeartbeatTimeout)
	}
	rc := s.raft.ReloadableConfig()
	if rc.HeartbeatTimeout == hb && rc.ElectionTimeout == el {
		return
	}
	rc.HeartbeatTimeout, rc.ElectionTimeout = hb, el
	if err := s.raft.ReloadConfig(rc); err != nil {
		s.log.Warn("cp: setting raft's heartbeat timeout", "timeout", hb, "err", err)
	}
}

func (s *Store) tick() {
	if s.cfg.BootstrapExpect > 0 {
		s.tryBootstrap()
	}
	if s.raft.State() != raft.Leader {
		return
	}
	if !s.ensureReady() {
		return
	}
	if err := s.reconcile(); err != nil && !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) {
		s.log.Warn("cp: reconciling the raft configuration", "err", err)
	}
}

// ensureReady runs a barrier once per term in which this node leads, so
// that its state includes everything committed before it took over; only
// then does it serve linearizable reads.
func (s *Store) ensureReady() bool {
	term := s.raft.CurrentTerm()
	s.mu.Lock()
	ready := s.readyTerm == term
	s.mu.Unlock()
	if ready {
		return true
	}
	if err := s.raft.Barrier(5 * time.Second).Error(); err != nil {
		s.log.Debug("cp: barrier as new leader failed", "err", err)
		return false
	}
	s.mu.Lock()
	s.readyTerm = term
	s.mu.Unlock()
	s.log.Info("cp: leading", "term", term)
	return true
}

// hasState reports whether this node is part of a configured group.
// Once it is, it stays so (a configuration is never emptied), and raft is
// not asked again.
func (s *Store) hasState() bool {
	if s.configured.Load() {
		return true
	}
	f := s.raft.GetConfiguration()
	ok := f.Error() == nil && len(f.Configuration().Servers) > 0
	if ok {
		s.configured.Store(true)
	}
	return ok
}

// tryBootstrap forms the group once BootstrapExpect members are alive.
// Every node that sees the same members computes the same voters, and raft
// accepts the same bootstrap configuration from several of them, so nodes
// that decide at the same moment agree. Before bootstrapping, the node asks
// the chosen voters whether a group exists already; if one does, or this
// node is not a chosen voter, it waits for the leader to add it.
func (s *Store) tryBootstrap() {
	if s.hasState() {
		return
	}
	alive := aliveRaftMembers(s.cfg.Node.Members())
	if len(alive) < s.cfg.BootstrapExpect {
		return
	}
	voters := alive[:min(s.cfg.BootstrapExpect, s.cfg.MaxVoters)]
	if !slices.ContainsFunc(voters, func(m cluster.Member) bool { return m.Name == s.name }) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conf := raft.Configuration{}
	for _, m := range voters {
		if m.Name != s.name {
			st, err := s.peerStatus(ctx, m.Name)
			if err != nil {
				s.log.Debug("cp: bootstrap waits for a peer", "peer", m.Name, "err", err)
				return
			}
			if st.HasState || st.Leader != "" {
				return // a group exists: wait to be added to it
			}
		}
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Raft),
		})
	}
	err := s.raft.BootstrapCluster(conf).Error()
	switch {
	case err == nil:
		s.log.Info("cp: bootstrapped the raft group", "voters", names(voters))
	case errors.Is(err, raft.ErrCantBootstrap):
	default:
		s.log.Warn("cp: bootstrap failed", "err", err)
	}
}

// aliveRaftMembers are the alive members that advertise a raft address,
// sorted by name.
func aliveRaftMembers(ms []cluster.Member) []cluster.Member {
	var out []cluster.Member
	for _, m := range ms {
		if m.State == cluster.StateAlive && m.Raft != "" {
			out = append(out, m)
		}
	}
	return out // Members() is sorted by name
}

func names(ms []cluster.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// change is one step the leader takes to align the configuration.
type change struct {
	kind    string // "add-voter", "add-nonvoter", "remove"
	id      string
	address string
}

// plan computes the configuration changes that align servers with the
// membership, as a plain function of both and the clock:
//   - an alive member that is not a server joins as a non-voter (as a
//     voter while there are fewer than max voters);
//   - alive non-voters are promoted while voters are fewer than max;
//   - a voter failed for longer than grace is removed once a healthy
//     member has been promoted in its place (or none is needed);
//   - a failed non-voter is removed after grace, a departed server at once
//     (as is a server no member record names: reconcile first gives each
//     such server a failed record, withMissing, so that it waits out the
//     grace);
//   - a server whose address changed is re-added at the new address.
//
// The leader (self) is never removed.
func plan(servers []raft.Server, members []cluster.Member, self string, maxVoters int, grace time.Duration, now time.Time) []change {
	byName := map[string]cluster.Member{}
	for _, m := range members {
		byName[m.Name] = m
	}
	// A voter that failed less than grace ago still counts: it may come
	// back, and replacing it at once would churn the configuration.
	counts := func(sv raft.Server) bool {
		m, ok := byName[string(sv.ID)]
		return ok && sv.Suffrage == raft.Voter &&
			(m.State == cluster.StateAlive || m.State == cluster.StateSuspect ||
				(m.State == cluster.StateFailed && now.Sub(m.Since) < grace))
	}
	inConf := map[string]raft.Server{}
	healthyVoters := 0
	for _, sv := range servers {
		inConf[string(sv.ID)] = sv
		if counts(sv) {
			healthyVoters++
		}
	}
	var out []change
	add := func(m cluster.Member) {
		if healthyVoters < maxVoters {
			out = append(out, change{"add-voter", m.Name, m.Raft})
			healthyVoters++
		} else {
			out = append(out, change{"add-nonvoter", m.Name, m.Raft})
		}
	}
	for _, sv := range servers { // promotions and address changes
		m, ok := byName[string(sv.ID)]
		if !ok || m.State != cluster.StateAlive || m.Raft == "" {
			continue
		}
		switch {
		case sv.Suffrage != raft.Voter && healthyVoters < maxVoters:
			add(m)
		case string(sv.Address) != m.Raft:
			kind := "add-nonvoter"
			if sv.Suffrage == raft.Voter {
				kind = "add-voter"
			}
			out = append(out, change{kind, m.Name, m.Raft})
		}
	}
	for _, m := range aliveRaftMembers(members) { // newcomers
		if _, ok := inConf[m.Name]; !ok {
			add(m)
		}
	}
	for _, sv := range servers { // removals
		id := string(sv.ID)
		m, ok := byName[id]
		if id == self {
			continue
		}
		gone := !ok || m.State == cluster.StateLeft
		dead := ok && m.State == cluster.StateFailed && now.Sub(m.Since) >= grace
		replaced := sv.Suffrage != raft.Voter || healthyVoters >= min(maxVoters, len(aliveRaftMembers(members)))
		if gone || (dead && replaced) {
			out = append(out, change{"remove", id, ""})
		}
	}
	return out
}

// withMissing is members with a failed record for each server that no
// member record names, failed since the leader first missed it (kept in
// since, which forgets the servers no longer missing). A node knows only
// the members it has heard of: one that failed before this node joined is
// not among them (memberlist passes on no dead member to a joiner), so a
// leader that had just started would otherwise remove such a voter at
// once, while it may be restarting, instead of after VoterGrace.
func withMissing(servers []raft.Server, members []cluster.Member, since map[string]time.Time, now time.Time) []cluster.Member {
	known := map[string]bool{}
	for _, m := range members {
		known[m.Name] = true
	}
	missing := map[string]bool{}
	out := slices.Clip(members) // appending never writes into the caller's array
	for _, sv := range servers {
		id := string(sv.ID)
		if known[id] {
			continue
		}
		missing[id] = true
		t, ok := since[id]
		if !ok {
			t = now
			since[id] = t
		}
		out = append(out, cluster.Member{Name: id, State: cluster.StateFailed, Since: t})
	}
	for id := range since {
		if !missing[id] {
			delete(since, id)
		}
	}
	return out
}

// reconcile applies plan's changes, one configuration change at a time.
func (s *Store) reconcile() error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	conf := f.Configuration()
	now := s.cfg.Now()
	s.mu.Lock()
	members := withMissing(conf.Servers, s.cfg.Node.Members(), s.missingSince, now)
	s.mu.Unlock()
	for _, c := range plan(conf.Servers, members, s.name, s.cfg.MaxVoters, s.cfg.VoterGrace, now) {
		var err error
		switch c.kind {
		case "add-voter":
			err = s.raft.AddVoter(raft.ServerID(c.id), raft.ServerAddress(c.address), 0, 5*time.Second).Error()
		case "add-nonvoter":
			err = s.raft.AddNonvoter(raft.ServerID(c.id), raft.ServerAddress(c.address), 0, 5*time.Second).Error()
		case "remove":
			err = s.raft.RemoveServer(raft.ServerID(c.id), 0, 5*time.Second).Error()
		}
		if err != nil {
			return err
		}
		s.log.Info("cp: changed the raft configuration", "change", c.kind, "server", c.id)
	}
	return nil
}

// peerState is the answer to rpcStatus.
type peerState struct {
	HasState bool   `msgpack:"s"`
	Leader   string `msgpack:"l"`
}

func (s *Store) peerStatus(ctx context.Context, peer string) (peerState, error) {
	body, err := s.rpc.Call(ctx, peer, rpcStatus, nil)
	if err != nil {
		return peerState{}, err
	}
	var st peerState
	return st, msgpack.Unmarshal(body, &st)
}

func (s *Store) handleStatus(context.Context, string, []byte) ([]byte, error) {
	_, leader := s.raft.LeaderWithID()
	return msgpack.Marshal(&peerState{HasState: s.hasState(), Leader: string(leader)})
}

// Status describes the raft group as this node sees it.
type Status struct {
	// Leader is the leader's node name, "" if unknown.
	Leader string `json:"leader"`
	// Role is this node's role: leader, follower, candidate or shutdown.
	Role string `json:"role"`
	Term uint64 `json:"term"`
	// Servers maps each member of the configuration to "voter" or "nonvoter".
	Servers map[string]string `json:"servers"`
	// CommitIndex and AppliedIndex are raft's.
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
}

// Status returns the group as this node sees it.
func (s *Store) Status() Status {
	_, leader := s.raft.LeaderWithID()
	st := Status{
		Leader: string(leader), Role: roleName(s.raft.State()), Term: s.raft.CurrentTerm(),
		Servers: map[string]string{}, CommitIndex: s.raft.CommitIndex(), AppliedIndex: s.raft.AppliedIndex(),
	}
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, sv := range f.Configuration().Servers {
			st.Servers[string(sv.ID)] = suffrageName(sv.Suffrage)
		}
	}
	return st
}

func roleName(st raft.RaftState) string {
	switch st {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

func suffrageName(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return "voter"
	}
	return "nonvoter"
}
