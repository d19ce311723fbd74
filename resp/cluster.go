package resp

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/dmap"
)

// Cluster awareness. Redis Cluster's 16,384 slots map onto the partition
// table's partitions in contiguous ranges (dmap.PartitionOfSlot), so a
// slot lives wholly in one partition, and its owner is the partition's
// owner: CLUSTER SLOTS lists, for each run of partitions with the same
// owner and backups, the run's slots, the owner (as master) and the
// backups (as replicas), at their RESP addresses.

func init() {
	register(&command{name: "cluster", arity: -2, group: "cluster", since: "3.0.0",
		summary: "A container for Redis Cluster commands.", run: cmdCluster})
}

// nodeID is a member's CLUSTER node ID: 40 hex digits, stable for its name.
func (s *Server) nodeID(name string) string {
	if id, ok := s.nodeIDs.Load(name); ok {
		return id.(string)
	}
	sum := sha1.Sum([]byte("shoal-node:" + name))
	id := hex.EncodeToString(sum[:])
	s.nodeIDs.Store(name, id)
	return id
}

// member is a member serving RESP.
type member struct {
	name, host string
	port       int
	alive      bool
}

// members are the members with a RESP address, by name.
func (s *Server) members() map[string]member {
	out := map[string]member{}
	if s.cfg.Node == nil {
		return out
	}
	for _, m := range s.cfg.Node.Members() {
		if m.RESP == "" {
			continue
		}
		host, p, err := net.SplitHostPort(m.RESP)
		if err != nil {
			continue
		}
		port, _ := strconv.Atoi(p)
		out[m.Name] = member{name: m.Name, host: host, port: port, alive: m.State == cluster.StateAlive || m.State == cluster.StateSuspect}
	}
	if _, ok := out[s.self]; !ok {
		if host, p, err := net.SplitHostPort(s.Addr()); err == nil {
			port, _ := strconv.Atoi(p)
			out[s.self] = member{name: s.self, host: host, port: port, alive: true}
		}
	}
	return out
}

// respAddr is a member's RESP address, "" if it has none.
func (s *Server) respAddr(name string) string {
	if name == s.self {
		return s.Addr()
	}
	if s.cfg.Node == nil {
		return ""
	}
	m, ok := s.cfg.Node.Member(name)
	if !ok {
		return ""
	}
	return m.RESP
}

// checkSlots answers CROSSSLOT for keys in different slots, and MOVED
// for a slot this node does not own ("" to run the command here).
func (c *conn) checkSlots(spec *command, args [][]byte) string {
	return c.checkKeys(spec.keys(args))
}

// checkKeys is checkSlots for keys.
func (c *conn) checkKeys(keys [][]byte) string {
	slot := -1
	for _, k := range keys {
		s := dmap.Slot(string(k))
		if slot >= 0 && s != slot {
			return errCrossSlot
		}
		slot = s
	}
	if slot < 0 {
		return ""
	}
	owner := c.s.m.Owner(dmap.PartitionOfSlot(slot, c.s.m.Partitions()))
	switch {
	case owner == "":
		return "CLUSTERDOWN Hash slot not served"
	case owner == c.s.self:
		return ""
	}
	if addr := c.s.respAddr(owner); addr != "" {
		return "MOVED " + strconv.Itoa(slot) + " " + addr
	}
	return "" // an owner without a RESP address: served by forwarding
}

// slotRange is a run of slots with the same replicas (owner first).
type slotRange struct {
	first, last int
	replicas    []string
}

func (s *Server) slotRanges() []slotRange {
	t := s.m.Table()
	n := s.m.Partitions()
	var out []slotRange
	for p := 0; p < n && p < len(t.Replicas); p++ {
		first, last := dmap.SlotRange(p, n)
		if first > last {
			continue
		}
		rs := t.Replicas[p]
		if len(rs) == 0 {
			continue
		}
		if k := len(out); k > 0 && out[k-1].last == first-1 && slices.Equal(out[k-1].replicas, rs) {
			out[k-1].last = last
			continue
		}
		out = append(out, slotRange{first, last, rs})
	}
	return out
}

// clusterArity is the argument count of each CLUSTER subcommand served.
var clusterArity = map[string]int{"KEYSLOT": 3, "MYID": 2, "INFO": 2, "SLOTS": 2, "SHARDS": 2, "NODES": 2, "COUNTKEYSINSLOT": 3}

func cmdCluster(c *conn, a [][]byte) {
	sub := upper(a[1])
	switch sub {
	case "SLOTS", "SHARDS", "NODES":
		c.clusterMode = true
	}
	if n, ok := clusterArity[sub]; ok && len(a) != n {
		c.o.err("ERR wrong number of arguments for 'cluster|" + strings.ToLower(sub) + "' command")
		return
	}
	switch {
	case sub == "KEYSLOT" && len(a) == 3:
		c.o.int(int64(dmap.Slot(string(a[2]))))
	case sub == "MYID" && len(a) == 2:
		c.o.bulkString(c.s.nodeID(c.s.self))
	case sub == "INFO" && len(a) == 2:
		c.o.verbatim(c.s.clusterInfo())
	case sub == "SLOTS" && len(a) == 2:
		c.s.clusterSlots(c)
	case sub == "SHARDS" && len(a) == 2:
		c.s.clusterShards(c)
	case sub == "NODES" && len(a) == 2:
		c.o.verbatim(c.s.clusterNodes())
	case sub == "COUNTKEYSINSLOT" && len(a) == 3:
		n, ok := parseInt(a[2])
		if !ok {
			c.o.err(errNotInteger)
			return
		}
		if n < 0 || n >= dmap.Slots {
			c.o.err("ERR Invalid slot")
			return
		}
		// Counted at the slot's owner, wherever the connection is: Redis
		// Cluster counts only the keys the answering node holds.
		ctx, cancel := c.ctx()
		defer cancel()
		rs, err := c.s.m.DoAt(ctx, dmap.PartitionOfSlot(int(n), c.s.m.Partitions()), []dmap.Op{{Code: dmap.CodeSize, N: n + 1}})
		if err != nil {
			c.o.err(errorText(err))
			return
		}
		c.o.int(rs[0].Int)
	case sub == "HELP":
		c.o.strings([]string{"CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"COUNTKEYSINSLOT <slot>", "    Return the number of keys in <slot>.",
			"INFO", "    Return information about the cluster.",
			"KEYSLOT <key>", "    Return the hash slot for <key>.",
			"MYID", "    Return the node id.",
			"NODES", "    Return cluster configuration seen by node.",
			"SHARDS", "    Return information about slot range mappings and the nodes associated with them.",
			"SLOTS", "    Return information about slots range mappings.",
			"HELP", "    Print this help."})
	default:
		c.o.err("ERR unknown subcommand '" + trunc(string(a[1]), 128) + "'. Try CLUSTER HELP.")
	}
}

func (s *Server) clusterInfo() string {
	ms := s.members()
	t := s.m.Table()
	served := 0
	owners := map[string]bool{}
	for _, r := range s.slotRanges() {
		if m, ok := ms[r.replicas[0]]; ok && m.alive {
			served += r.last - r.first + 1
			owners[r.replicas[0]] = true
		}
	}
	state := "ok"
	if served < dmap.Slots {
		state = "fail"
	}
	lines := []string{
		"cluster_enabled:1",
		"cluster_state:" + state,
		fmt.Sprintf("cluster_slots_assigned:%d", served),
		fmt.Sprintf("cluster_slots_ok:%d", served),
		"cluster_slots_pfail:0",
		fmt.Sprintf("cluster_slots_fail:%d", dmap.Slots-served),
		fmt.Sprintf("cluster_known_nodes:%d", len(ms)),
		fmt.Sprintf("cluster_size:%d", len(owners)),
		fmt.Sprintf("cluster_current_epoch:%d", t.Epoch),
		fmt.Sprintf("cluster_my_epoch:%d", t.Epoch),
		"cluster_stats_messages_sent:0",
		"cluster_stats_messages_received:0",
		"total_cluster_links_buffer_limit_exceeded:0",
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

func (s *Server) clusterSlots(c *conn) {
	ms := s.members()
	var rows []slotRange
	for _, r := range s.slotRanges() {
		if _, ok := ms[r.replicas[0]]; ok {
			rows = append(rows, r)
		}
	}
	c.o.array(len(rows))
	for _, r := range rows {
		var nodes []member
		for _, name := range r.replicas {
			if m, ok := ms[name]; ok {
				nodes = append(nodes, m)
			}
		}
		c.o.array(2 + len(nodes))
		c.o.int(int64(r.first))
		c.o.int(int64(r.last))
		for _, m := range nodes {
			c.o.array(3)
			c.o.bulkString(m.host)
			c.o.int(int64(m.port))
			c.o.bulkString(s.nodeID(m.name))
		}
	}
}

// ownedSlots groups the slot ranges by owner.
func (s *Server) ownedSlots() map[string][][2]int {
	by := map[string][][2]int{}
	for _, r := range s.slotRanges() {
		o := r.replicas[0]
		if k := len(by[o]); k > 0 && by[o][k-1][1] == r.first-1 {
			by[o][k-1][1] = r.last
			continue
		}
		by[o] = append(by[o], [2]int{r.first, r.last})
	}
	return by
}

// clusterShards answers CLUSTER SHARDS: each owner is a shard of its own
// (a partition's backups differ from one partition to the next, so they
// are not listed as a shard's replicas).
func (s *Server) clusterShards(c *conn) {
	ms := s.members()
	by := s.ownedSlots()
	var names []string
	for name := range by {
		if _, ok := ms[name]; ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	c.o.array(len(names))
	for _, name := range names {
		m := ms[name]
		c.o.mapHeader(2)
		c.o.bulkString("slots")
		c.o.array(2 * len(by[name]))
		for _, r := range by[name] {
			c.o.int(int64(r[0]))
			c.o.int(int64(r[1]))
		}
		c.o.bulkString("nodes")
		c.o.array(1)
		c.o.mapHeader(7)
		health := "online"
		if !m.alive {
			health = "fail"
		}
		for _, kv := range [][2]string{{"id", s.nodeID(name)}, {"ip", m.host}, {"endpoint", m.host}, {"role", "master"}, {"health", health}} {
			c.o.bulkString(kv[0])
			c.o.bulkString(kv[1])
		}
		c.o.bulkString("port")
		c.o.int(int64(m.port))
		c.o.bulkString("replication-offset")
		c.o.int(0)
	}
}

func (s *Server) clusterNodes() string {
	ms := s.members()
	by := s.ownedSlots()
	epoch := s.m.Table().Epoch
	names := make([]string, 0, len(ms))
	for name := range ms {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		m := ms[name]
		flags := "master"
		if name == s.self {
			flags = "myself,master"
		}
		if !m.alive {
			flags += ",fail"
		}
		cport := m.port + 10000
		if cport > 65535 {
			cport = m.port
		}
		link := "connected"
		if !m.alive {
			link = "disconnected"
		}
		fmt.Fprintf(&b, "%s %s@%d %s - 0 0 %d %s", s.nodeID(name), net.JoinHostPort(m.host, strconv.Itoa(m.port)), cport, flags, epoch, link)
		for _, r := range by[name] {
			if r[0] == r[1] {
				fmt.Fprintf(&b, " %d", r[0])
			} else {
				fmt.Fprintf(&b, " %d-%d", r[0], r[1])
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
