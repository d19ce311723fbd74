package server

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The loopback preset gives the raft leader a slower heartbeat than its
// followers' timeout (cp.Config.LeaderHeartbeatTimeout); the LAN preset,
// and a raft timing given by hand, keep raft's symmetric one.
func TestPresetLeaderHeartbeat(t *testing.T) {
	c := DefaultNodeConfig(PresetLoopback)
	if err := c.applyPreset(); err != nil {
		t.Fatal(err)
	}
	if c.Store.Raft.HeartbeatTimeout != 1500*time.Millisecond || c.Store.LeaderHeartbeatTimeout != 3750*time.Millisecond {
		t.Errorf("loopback: followers %v, leader %v; want 1.5 s and 3.75 s", c.Store.Raft.HeartbeatTimeout, c.Store.LeaderHeartbeatTimeout)
	}
	if err := c.Store.Validate(); err != nil {
		t.Errorf("loopback: %v", err)
	}
	c = DefaultNodeConfig(PresetLAN)
	if err := c.applyPreset(); err != nil {
		t.Fatal(err)
	}
	if c.Store.LeaderHeartbeatTimeout != 0 {
		t.Errorf("lan: leader heartbeat timeout %v, want 0 (raft's own)", c.Store.LeaderHeartbeatTimeout)
	}
	c = DefaultNodeConfig(PresetLoopback)
	c.Store.Raft = raft.DefaultConfig()
	if err := c.applyPreset(); err != nil {
		t.Fatal(err)
	}
	if c.Store.LeaderHeartbeatTimeout != 0 {
		t.Errorf("raft timing by hand: leader heartbeat timeout %v, want 0", c.Store.LeaderHeartbeatTimeout)
	}
}
