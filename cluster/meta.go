package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
)

// Meta is what a node tells the cluster about itself, gossiped as
// memberlist node metadata (at most memberlist.MetaMaxSize bytes encoded).
type Meta struct {
	RPC  string `msgpack:"r" json:"rpc"`
	HTTP string `msgpack:"h" json:"http,omitempty"`
	Raft string `msgpack:"f" json:"raft,omitempty"`
	// RESP is where the node serves the Redis protocol ("" if it does not).
	RESP      string `msgpack:"s" json:"resp,omitempty"`
	CacheMode string `msgpack:"m" json:"cache_mode"`
	Version   string `msgpack:"v" json:"version,omitempty"`
	// Incarnation identifies one run of the node's process; it changes
	// when the node restarts.
	Incarnation uint64 `msgpack:"i" json:"incarnation"`
	// TLS: the node runs its peer RPC and raft over mutual TLS. A secured
	// node refuses a peer without it at the gossip (and a plaintext node
	// one with it): the two could not talk over the peer RPC or raft, and
	// such a member would be given raft votes and partitions it cannot
	// serve.
	TLS bool `msgpack:"t,omitempty" json:"tls,omitempty"`
}

func (m *Meta) encode() ([]byte, error) {
	b, err := msgpack.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: node metadata is %d bytes, over memberlist's limit of %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("cluster: node has no metadata (not a shoal node?)")
	}
	if err := msgpack.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("cluster: bad node metadata: %w", err)
	}
	return m, nil
}

// MemberState is a member's state as this node sees it.
type MemberState string

const (
	StateAlive   MemberState = "alive"
	StateSuspect MemberState = "suspect"
	// StateFailed: the failure detector declared the member dead.
	StateFailed MemberState = "failed"
	// StateLeft: the member left gracefully.
	StateLeft MemberState = "left"
)

// Member is one node of the cluster.
type Member struct {
	Name string `json:"name"`
	// Addr is the gossip address.
	Addr  string      `json:"gossip"`
	State MemberState `json:"state"`
	Meta
	// Since is when this node last saw the member change state.
	Since time.Time `json:"since"`
}

// EventType says what happened to a member.
type EventType int

const (
	EventJoin EventType = iota + 1
	EventLeave
	EventFail
	EventUpdate
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	case EventUpdate:
		return "update"
	}
	return fmt.Sprintf("event(%d)", int(t))
}

// Event is a membership change.
type Event struct {
	Type   EventType
	Member Member
}
