package cluster

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
)

// Gossip encryption. memberlist encrypts every gossip packet and stream
// with AES-GCM under the primary key of its keyring and decrypts with any
// installed key; with GossipVerifyIncoming and GossipVerifyOutgoing (set
// whenever a key is) a node without one of the cluster's keys can neither
// send nor receive, so it cannot join. Keys rotate without downtime as in
// Consul: install the new key on every node, use it on every node, remove
// the old one (Node.Keyring applies each step on every member).
//
// The keyring is kept in Config.KeyringFile (0600): installed keys
// survive a restart, and once the file exists it wins over
// Config.GossipKey.
//
// Why the peer RPC carries the operations, not the bus or the raft store:
// a keyring step must take effect in each member's memory and file and be
// answered member by member (an operator must know which member still
// lacks a key before the next step), which is a call to each; the bus
// adds nothing to that but numbering. Through raft, the keys would sit in
// the replicated log and in every snapshot, and so in the backups that
// 'shoal snapshot save' makes, and a member would apply a step whether or
// not it can still gossip; a member that cannot be reached cannot be
// fixed through gossip either, and is named in the answer instead.

// Keyring operations, for Node.Keyring.
const (
	KeyringList    = "list"
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// Errors of the keyring.
var (
	// ErrNoEncryption: the node runs without gossip encryption, so it has
	// no keyring to change (a key cannot be switched on at run time: the
	// node would stop understanding its peers).
	ErrNoEncryption = errors.New("cluster: gossip encryption is off on this node (start it with a gossip key)")
	// ErrKeyNotInstalled: 'use' of a key that is not installed.
	ErrKeyNotInstalled = errors.New("cluster: the key is not installed on this node (install it first)")
	// ErrPrimaryKey: 'remove' of the key in use.
	ErrPrimaryKey = errors.New("cluster: the key is this node's primary key (use another key first)")
)

// GenerateGossipKey returns a new random 32-byte (AES-256) gossip key.
func GenerateGossipKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

// EncodeGossipKey is a key's text form: standard base64.
func EncodeGossipKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// DecodeGossipKey reads a key's text form: base64 (standard, or URL-safe)
// of 16, 24 or 32 bytes.
func DecodeGossipKey(s string) ([]byte, error) {
	s = string(bytes.TrimSpace([]byte(s)))
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if k2, err2 := base64.URLEncoding.DecodeString(s); err2 == nil {
			k, err = k2, nil
		}
	}
	if err != nil {
		return nil, errors.New("a gossip key is base64 (e.g. from 'openssl rand -base64 32'); this is not base64")
	}
	if err := checkGossipKey(k); err != nil {
		return nil, err
	}
	return k, nil
}

func checkGossipKey(k []byte) error {
	if l := len(k); l != 16 && l != 24 && l != 32 {
		return fmt.Errorf("a gossip key is 16, 24 or 32 bytes (AES-128, -192 or -256) before base64; this one is %d", l)
	}
	return nil
}

// keyringFile is the JSON kept in Config.KeyringFile: the keys in base64,
// the primary first (Consul's format).
type keyringFile []string

// ReadKeyringFile reads a keyring kept in Config.KeyringFile: its keys,
// the primary first.
func ReadKeyringFile(path string) ([][]byte, error) { return readKeyring(path) }

func readKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f keyringFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("cluster: keyring %s: %w", path, err)
	}
	keys := make([][]byte, 0, len(f))
	for i, s := range f {
		k, err := DecodeGossipKey(s)
		if err != nil {
			return nil, fmt.Errorf("cluster: keyring %s: key %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("cluster: keyring %s holds no key; remove it to start from the gossip key", path)
	}
	return keys, nil
}

// writeKeyring replaces path with keys, atomically and synced, mode 0600.
func writeKeyring(path string, keys [][]byte) error {
	f := make(keyringFile, len(keys))
	for i, k := range keys {
		f[i] = EncodeGossipKey(k)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("cluster: saving the keyring: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("cluster: saving the keyring: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		if d, derr := os.Open(filepath.Dir(path)); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: saving the keyring: %w", err)
	}
	return nil
}

// openKeyring builds the node's keyring: from KeyringFile when it exists,
// else from GossipKey (saved to KeyringFile), else none (no encryption).
func (n *Node) openKeyring() (*memberlist.Keyring, error) {
	c := &n.cfg
	var keys [][]byte
	if c.KeyringFile != "" {
		var err error
		keys, err = readKeyring(c.KeyringFile)
		switch {
		case err == nil:
			at := slices.IndexFunc(keys, func(k []byte) bool { return bytes.Equal(k, c.GossipKey) })
			switch {
			case len(c.GossipKey) == 0:
				c.Logger.Info("cluster: gossip keyring read from the data directory", "keyring", c.KeyringFile, "keys", len(keys))
			case at == 0:
				c.Logger.Info("cluster: gossip keyring read from the data directory; the gossip key given is its primary key",
					"keyring", c.KeyringFile, "keys", len(keys))
			case at > 0:
				c.Logger.Warn("cluster: the gossip key given is stale: the keyring saved in the data directory wins, "+
					"where it is installed but another key is in use (keys rotated with 'shoal keyring')",
					"keyring", c.KeyringFile, "keys", len(keys))
			default:
				c.Logger.Warn("cluster: the gossip key given is stale: it is not in the keyring saved in the data directory, which wins "+
					"(keys rotated with 'shoal keyring'); to start from the given key instead, remove the keyring file",
					"keyring", c.KeyringFile, "keys", len(keys))
			}
		case errors.Is(err, os.ErrNotExist):
			keys = nil
		default:
			return nil, err
		}
	}
	if keys == nil && len(c.GossipKey) > 0 {
		keys = [][]byte{slices.Clone(c.GossipKey)}
		if c.KeyringFile != "" {
			if err := writeKeyring(c.KeyringFile, keys); err != nil {
				return nil, err
			}
		}
	}
	if keys == nil {
		return nil, nil
	}
	return memberlist.NewKeyring(keys[1:], keys[0])
}

// KeyringState is one node's keyring: its keys in base64, the primary
// (the one it encrypts with) first.
type KeyringState struct {
	Primary string   `json:"primary" msgpack:"p"`
	Keys    []string `json:"keys" msgpack:"k"`
}

// GossipKeys is how many gossip keys the node holds (0: no encryption).
func (n *Node) GossipKeys() int {
	n.keyMu.Lock()
	defer n.keyMu.Unlock()
	if n.keyring == nil {
		return 0
	}
	return len(n.keyring.GetKeys())
}

// keyringState reads the keyring. memberlist's GetKeys returns its own
// slice, which RemoveKey shifts in place: copy it under keyMu.
func (n *Node) keyringState() KeyringState {
	keys := n.keyring.GetKeys()
	st := KeyringState{Keys: make([]string, len(keys))}
	for i, k := range keys {
		st.Keys[i] = EncodeGossipKey(k)
	}
	if len(keys) > 0 {
		st.Primary = st.Keys[0]
	}
	return st
}

// applyKeyOp changes this node's keyring and saves it. The new keyring is
// saved before memberlist's changes, so a crash in between leaves the
// file one step ahead, never behind what peers were told.
func (n *Node) applyKeyOp(op string, key []byte) (KeyringState, error) {
	n.keyMu.Lock()
	defer n.keyMu.Unlock()
	if n.keyring == nil {
		return KeyringState{}, ErrNoEncryption
	}
	if op == KeyringList {
		return n.keyringState(), nil
	}
	if err := checkGossipKey(key); err != nil {
		return KeyringState{}, err
	}
	cur := slices.Clone(n.keyring.GetKeys())
	at := slices.IndexFunc(cur, func(k []byte) bool { return bytes.Equal(k, key) })
	var next [][]byte
	switch op {
	case KeyringInstall:
		if at >= 0 {
			return n.keyringState(), nil
		}
		next = append(slices.Clone(cur), slices.Clone(key))
	case KeyringUse:
		if at < 0 {
			return n.keyringState(), ErrKeyNotInstalled
		}
		if at == 0 {
			return n.keyringState(), nil
		}
		next = append([][]byte{cur[at]}, slices.Delete(slices.Clone(cur), at, at+1)...)
	case KeyringRemove:
		if at == 0 {
			return n.keyringState(), ErrPrimaryKey
		}
		if at < 0 {
			return n.keyringState(), nil
		}
		next = slices.Delete(slices.Clone(cur), at, at+1)
	default:
		return KeyringState{}, fmt.Errorf("cluster: unknown keyring operation %q (want list, install, use or remove)", op)
	}
	if n.cfg.KeyringFile != "" {
		if err := writeKeyring(n.cfg.KeyringFile, next); err != nil {
			return n.keyringState(), err
		}
	}
	var err error
	switch op {
	case KeyringInstall:
		err = n.keyring.AddKey(slices.Clone(key))
	case KeyringUse:
		err = n.keyring.UseKey(cur[at])
	case KeyringRemove:
		err = removeKey(n.keyring, cur, at)
	}
	if err == nil {
		n.cfg.Logger.Info("cluster: gossip keyring changed", "op", op, "keys", len(next))
	}
	return n.keyringState(), err
}

// removeKey removes cur[at] from kr (cur is kr's keys, at > 0) without
// writing to the slice memberlist's readers hold: memberlist's RemoveKey
// deletes with append(keys[:i], keys[i+1:]...), which shifts the later
// keys within the array that a concurrent decryption is iterating (a data
// race, and a torn key read). Removing the last key writes nothing, and
// every change makes a fresh array; so the keys after cur[at] are removed
// from the end, then cur[at], then they are added back (AddKey appends
// past the length any reader holds). Those secondary keys are missing for
// a few microseconds: a packet under one of them in that instant is
// dropped, which gossip tolerates; in a rotation the key removed is the
// last one anyway.
func removeKey(kr *memberlist.Keyring, cur [][]byte, at int) error {
	for i := len(cur) - 1; i >= at; i-- {
		if err := kr.RemoveKey(cur[i]); err != nil {
			return err
		}
	}
	for _, k := range cur[at+1:] {
		if err := kr.AddKey(k); err != nil {
			return err
		}
	}
	return nil
}

// KeyringResult is one member's answer to a keyring operation.
type KeyringResult struct {
	Node string `json:"node"`
	// Keyring is the member's keyring after the operation (empty if it
	// could not be reached).
	Keyring KeyringState `json:"keyring"`
	// Error says why the operation failed on this member, "" if it did not.
	Error string `json:"error,omitempty"`
}

// rpcKeyring carries a keyring operation to a member.
const rpcKeyring = "cluster.keyring"

// keyringMaxAge bounds how old (or how far ahead, between clocks) a sealed
// keyring operation may be: a recorded one cannot be replayed later.
const keyringMaxAge = 5 * time.Minute

type keyringRequest struct {
	Op   string `msgpack:"o"`
	Key  []byte `msgpack:"k"`
	Time int64  `msgpack:"t"` // unix nanoseconds at the sender
}

type keyringReply struct {
	State KeyringState `msgpack:"s"`
	Error string       `msgpack:"e"`
}

// Keyring applies a keyring operation (KeyringList, KeyringInstall,
// KeyringUse or KeyringRemove; key is unused by list) on this node and on
// every other alive member, concurrently, over the peer RPC, and returns
// each member's result, sorted by name. It waits for every member until ctx
// ends; a member that did not answer has an Error. The operation travels
// sealed (AES-GCM) under this node's primary gossip key, so only a holder
// of one of the cluster's keys can change or read a member's keyring,
// whether or not the peer RPC runs over TLS. Install, use and remove are
// idempotent: repeat one that failed somewhere.
//
// A rotation without downtime is: install the new key (every member can
// then decrypt it), use it (every member encrypts with it), remove the old
// one. Using a key before every member has it would cut the members that
// lack it off.
func (n *Node) Keyring(ctx context.Context, op string, key []byte) ([]KeyringResult, error) {
	switch op {
	case KeyringList:
	case KeyringInstall, KeyringUse, KeyringRemove:
		if err := checkGossipKey(key); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("cluster: unknown keyring operation %q (want list, install, use or remove)", op)
	}
	n.keyMu.Lock()
	kr := n.keyring
	var primary []byte
	if kr != nil {
		primary = slices.Clone(kr.GetPrimaryKey())
	}
	n.keyMu.Unlock()
	if kr == nil {
		return nil, ErrNoEncryption
	}
	req, err := msgpack.Marshal(&keyringRequest{Op: op, Key: key, Time: n.cfg.Now().UnixNano()})
	if err != nil {
		return nil, err
	}
	sealed, err := sealKeyring(primary, req)
	if err != nil {
		return nil, err
	}
	peers := n.peerNames()
	results := make([]KeyringResult, len(peers)+1)
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = n.callKeyring(ctx, p, primary, sealed)
		}()
	}
	st, err := n.applyKeyOp(op, key)
	results[len(peers)] = KeyringResult{Node: n.cfg.Name, Keyring: st, Error: errString(err)}
	wg.Wait()
	slices.SortFunc(results, func(a, b KeyringResult) int { return cmpString(a.Node, b.Node) })
	return results, nil
}

func (n *Node) callKeyring(ctx context.Context, peer string, key, sealed []byte) KeyringResult {
	r := KeyringResult{Node: peer}
	resp, err := n.rpc.Call(ctx, peer, rpcKeyring, sealed)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	plain, _, err := openKeyring([][]byte{key}, resp)
	var rep keyringReply
	if err == nil {
		err = msgpack.Unmarshal(plain, &rep)
	}
	if err != nil {
		r.Error = fmt.Sprintf("unreadable answer: %v", err)
		return r
	}
	r.Keyring, r.Error = rep.State, rep.Error
	return r
}

// onKeyring serves a member's keyring operation: opened with one of this
// node's keys, applied, answered sealed under the key that opened it.
func (n *Node) onKeyring(_ context.Context, from string, body []byte) ([]byte, error) {
	n.keyMu.Lock()
	var keys [][]byte
	if n.keyring != nil {
		for _, k := range n.keyring.GetKeys() {
			keys = append(keys, slices.Clone(k))
		}
	}
	n.keyMu.Unlock()
	if keys == nil {
		return nil, ErrNoEncryption
	}
	plain, key, err := openKeyring(keys, body)
	var req keyringRequest
	if err == nil {
		err = msgpack.Unmarshal(plain, &req)
	}
	if err == nil {
		if age := n.cfg.Now().Sub(time.Unix(0, req.Time)); age > keyringMaxAge || age < -keyringMaxAge {
			err = fmt.Errorf("sent %v from now by this node's clock (at most %v)", age.Round(time.Second), keyringMaxAge)
		}
	}
	if err != nil {
		n.refusals.refuse(ListenerKeyring, ReasonUnsealed, n.rpcAddrsOf(from), from, "keyring operation refused: "+err.Error())
		return nil, errors.New("keyring operation refused: not sealed under any of this node's gossip keys, or too old")
	}
	st, err := n.applyKeyOp(req.Op, req.Key)
	out, merr := msgpack.Marshal(&keyringReply{State: st, Error: errString(err)})
	if merr != nil {
		return nil, merr
	}
	return sealKeyring(key, out)
}

// keyringAAD binds sealed keyring messages to their purpose.
var keyringAAD = []byte("shoal keyring v1")

func sealKeyring(key, plain []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(plain)+gcm.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plain, keyringAAD), nil
}

// openKeyring opens a sealed message with the first of keys that does,
// and returns that key too.
func openKeyring(keys [][]byte, msg []byte) ([]byte, []byte, error) {
	for _, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			continue
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil || len(msg) < gcm.NonceSize() {
			continue
		}
		ns := gcm.NonceSize()
		if plain, err := gcm.Open(nil, msg[:ns], msg[ns:], keyringAAD); err == nil {
			return plain, k, nil
		}
	}
	return nil, nil, errors.New("no gossip key of this node opens it")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
