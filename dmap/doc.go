// Package dmap holds named maps in the cluster's partitioned store: the
// partition table of the L2 cache (l2cache.TableKeeper: 271 partitions,
// an owner and synchronous backups each), whatever the cache's mode. It
// is what shoal serves over the Redis protocol (package resp), and it
// knows nothing of that protocol.
//
// # Keys, maps and partitions
//
// A key of map m is the string "m:key"; a key without ':' is in the
// default map "". Keys hash as in Redis Cluster: CRC16 of the key, or of
// its {hash tag}, modulo 16,384 slots, and slots map onto partitions in
// contiguous ranges (PartitionOfSlot), so a Redis Cluster client can route
// a key to its owner from a slot map. A key is a string or a hash, with an
// optional deadline (an absolute time, replicated with the value; whether
// it has passed is judged by the owner's clock). Each node bounds what it
// holds, as owner and backup, by MaxBytes; past it random keys are
// evicted and counted (Stats.Evictions): a map is a cache, not a
// database, and an evicted key is gone.
//
// # Who answers
//
// Every operation runs at its partition's owner (Do sends it there over
// the peer RPC, or runs it in place), atomically with the operations of
// the same partition in the same call. The owner serving rule is the L2
// cache's (l2cache's package doc, "Never stale under faults"):
//
//   - an owner answers only while this node's read lease is valid;
//   - a new owner answers only a lease after it adopted the table that gave
//     it the partition (TableKeeper.AdoptedAt): every node that could still
//     act as the previous owner under an older table has, by then, either
//     renewed its lease — which adopts the newest table, in which it no
//     longer owns the partition — or lost its lease and stopped answering;
//   - an owner keeps its data only if it owned the partition in every table
//     since it last looked (TableKeeper.RunStart); a new owner takes over a
//     backup copy only if it was the partition's backup in every table
//     since, holds a baseline from the owner, and missed no change after it
//     (a gap in the sequence numbers taints the copy); otherwise it starts
//     empty.
//
// So at any moment at most one node answers for a partition.
//
// # Why no acknowledged write is lost with a backup, and what is lost without
//
// An owner numbers the changes it makes to a partition (per partition,
// from its baseline) and sends each change, as the state it left the key
// in, to every backup of its current table, in order; it acknowledges a
// write only when every backup applied the batch that carries it. The
// first batch a backup receives from an owner under a table is the whole
// partition (its baseline), taken under the partition's lock after every
// earlier change. Suppose write W was acknowledged to a client, and later
// the owner O fails. The next table names as owner, if one survived, a
// node B that was the backup in every table since O's baseline to it (the
// table keeper promotes surviving backups first): B applied W before O
// acknowledged it, and every change before W, with no gap (or it would be
// tainted and not take over). B answers nothing until O's lease, which O
// could hold at most a lease after B's adoption, has run out; so no write
// is acknowledged by O after B took its copy. Hence B holds W and every
// write acknowledged before it.
//
// What is lost: with --backups 0 every key of a partition whose owner
// fails (and with b backups, of a partition whose owner and all b backups
// fail within one table's life, before a new backup got its baseline).
// A partition that moves to a node that was not its untainted backup (a
// node joining, when owners shed partitions to it) starts empty there:
// shoal does not migrate partitions, as DISTRIBUTED mode does not. A
// write whose replication failed is answered ErrNotAcked: it ran at the
// owner and may be visible there, but it may vanish on a takeover.
// Evicted keys are gone.
//
// # Why a read after an acknowledged write never sees older data
//
// Reads and writes of a key run at one node, the owner, under the
// partition's lock, and at most one node answers for a partition at a
// time (above). A write acknowledged at time t was applied at the owner
// of its time; any read that starts after t runs either at that owner,
// after the write, or at a later owner, which holds the write (above) or,
// with no backup, holds nothing (an empty map is not older data: it is
// loss, stated above).
//
// # Tracking: what clients of this node cached
//
// A read with DoOptions.Track registers the reading node at the owner as a
// holder of each key read, under the partition's lock, before the answer
// leaves. The next change of the key is sent to every holder (and the
// holder is forgotten for the key), and the change is acknowledged only
// after each holder answered — after its OnInvalidate ran — or, for a
// holder that does not answer in SyncTimeout, after it was excluded from
// the read lease registry and its lease has run out (Lease.Exclude). A
// node invalidates everything its clients cached (OnInvalidate with p < 0)
// when its lease runs out or is reset, and every key of a partition whose
// owner changed (or whose owner's run of tables, as this node adopted
// them, was broken) when it adopts the table that says so: a new owner,
// which knows no holders, answers only a lease after it adopted that
// table, and a node with a valid lease has adopted it by then. Package
// resp turns OnInvalidate into client invalidation messages; its doc
// carries the argument to the client.
package dmap
