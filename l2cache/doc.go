// Package l2cache is shoal's second-level entity cache, shaped like
// Hibernate's as Hazelcast provides it: named regions (entity, collection,
// query, and the update-timestamps that guard queries), each with an access
// strategy (read-only, nonstrict-read-write, read-write).
//
// In LOCAL mode every node caches in its own memory (ristretto, bounded by
// cost) and writes invalidate locally and on the cluster bus. In
// DISTRIBUTED mode the entries live in a partitioned map across the
// cluster: each key at its partition's owner, copied synchronously to its
// backups. NEAR mode is DISTRIBUTED plus a near copy on every node of what
// it read, dropped by the owner before a write is acknowledged (near.go).
// Each mode is a backend behind one small interface (region.go); the
// cluster runs one mode at a time, kept in the consistent store, and
// switches it live without a stale read (mode.go has the argument).
//
// # The stale put race, and why it cannot happen here
//
// Reader R misses, loads row version 1 from the database, and is about to
// put it. Writer W commits version 2 and invalidates the key. If R's put
// lands after W's invalidation, the cache holds version 1 until something
// evicts it: the stale put race.
//
// Every cache has a logical clock (a counter). A load takes a stamp from it
// when it starts; every invalidation of a key, of a whole region, or of a
// query space, takes a stamp when it is applied on this node — whether it
// was raised here or arrived from another node on the bus. The invalidation
// stamps are kept per key (and per region and space). Then:
//
//  1. A put-from-load is refused if the key is soft-locked or its last
//     invalidation (or its region's) has a stamp greater than the load's:
//     the invalidation happened after the load began, so the loaded state
//     may predate the write.
//  2. Every cached entry carries its load's stamp, and a read treats an
//     entry as a miss unless its stamp is greater than the key's (and
//     region's) last invalidation. So a put that passed check 1 just before
//     an invalidation, or a ristretto Set that its asynchronous buffers
//     apply after the Del that should have removed it, is never served:
//     ristretto is only a hint.
//  3. When the table of per-key stamps grows past its bound it is replaced
//     by one region-wide stamp, which is older than no entry it dropped:
//     precision is lost, never safety.
//
// Across nodes the argument is the same, on each node's own clock: W's
// node publishes the invalidation after the commit; when it reaches R's
// node it is stamped there, and R's put (rule 1) or R's entry (rule 2) is
// judged against that stamp. With asynchronous invalidation a reader on
// another node may see the old row until the message arrives (bounded by
// the bus's delivery time); with --invalidation sync the write does not
// return until every live member has applied the invalidation. A message
// the bus could not deliver is reported as missed, and the cache then
// clears everything it cannot vouch for: each region's invalidations
// travel on a bus topic of their own, so that is the region the lost
// message was for (and, for lost query-space updates, every cached query
// result).
//
// In DISTRIBUTED mode the argument runs at each key's owner, on the
// owner's clock: a miss hands the reader a ticket stamped by the owner,
// invalidations and soft locks are stamped there, and the owner refuses a
// put whose ticket is not newer than the key's last invalidation. Every
// change is replicated synchronously to the backups before it is
// acknowledged; a backup that takes a partition over re-stamps what it
// holds on its own clock (or starts empty if it missed a replication), so
// no ticket from the old owner is ever accepted by the new one.
//
// # Never stale under faults: the read lease
//
// The argument above assumes a node hears every invalidation it is sent
// or learns that it missed one. A node that is paused (SIGSTOP, a long GC,
// a stalled VM), cut off, or declared failed while it still runs cannot
// know what it missed: the others stop sending to it, and requests that
// queued while it was paused are answered the moment it resumes. So a
// node serves (and stores) cached state only while it holds a read lease
// (lease.go), and every write that did not reach it waits until that lease
// has run out:
//
//   - Each node has a record in the consistent store (MembersPrefix+name)
//     that only the node itself makes active, with a new generation. It
//     renews its lease by reading the records (and the partition table)
//     linearizably every Duration/4: a read sent at time s that finds its
//     record active, at the generation it activated, lets it serve until
//     s+Duration on its own monotonic clock. A read is checked against
//     that bound when it starts, so requests that waited out a pause are
//     not served from the cache.
//   - A synchronous invalidation (--invalidation sync, and in DISTRIBUTED
//     mode every query-space update and region clear) is sent to every
//     member; for every active record whose node did not acknowledge it,
//     the writer excludes the record (compare-and-set) and then waits
//     Duration (and a margin for clock rates) after it saw the exclusion
//     committed. The excluded node's last renewal was linearized before the
//     exclusion, so its lease ends before the writer acknowledges. Every
//     other writer counts an excluded record among those a write must
//     reach until a lease (and the margin) after it first saw the
//     exclusion: the excluded node learns of it only at its next renewal
//     and serves until then, and only the writer that excluded it waited
//     for that. A node that closes stops serving, then excludes its own
//     record as resigned, which nobody waits for.
//   - A node that finds itself excluded (or starts) drops everything it
//     cached, activates its record again, and serves nothing for a further
//     Duration (and the margin for clock rates): by then every writer
//     whose view of the records is less than Duration old — a writer with
//     an older view reads them again — counts it among the nodes a write
//     must reach, and every node still serving has renewed after the
//     activation and seen the record's new generation (NEAR mode rests on
//     this: a restarted owner has lost its registry of near holders, and
//     a holder drops the copies a member gave it when a renewal shows
//     that member's new generation, before that renewal's lease takes
//     effect). The margin covers clock rates that differ by up to a
//     tenth: each node measures only its own intervals. A node whose lease
//     merely lapsed was never excluded, so it missed no synchronous
//     invalidation; with asynchronous ones it drops everything too.
//   - Missed messages on the query-space topic mark every query space
//     updated, including spaces this node has never heard of.
//
// In DISTRIBUTED mode an owner answers only while its lease is valid, and
// a node answers as the owner of a partition only a lease (and the margin
// for clock rates) after it adopted the table that gave it the partition:
// an old owner that has not learnt of the new table serves nothing past
// its lease, because its renewal reads and adopts the newest table. An
// owner keeps its entries only if it owned the partition in every table
// since it last looked; a backup takes over only if it was the backup
// throughout and missed no replication, and it drops the query results
// it holds (they were judged against the old owner's query-space stamps,
// which mean nothing on its clock), so an owner does not copy its query
// results to its backups at all.
//
// The bound and its cost: with the default lease of 2 s, a member that
// stops answering makes a synchronous write wait for its acknowledgement
// (SyncTimeout), then one store write and 2.25 s more, once; later writes
// see it excluded and do not wait. A partition that moves is unavailable
// for a lease to gets (they read through) and to writes (they wait). A
// node without a lease reads through to the database; if the store
// cannot be reached to exclude a member, the write's invalidation fails
// (ErrExcludeFailed) and the write is not acknowledged.
//
// For read-write regions a soft lock is taken (locally and on every node)
// before the update and released after the commit; a locked key reads as a
// miss and refuses puts, and a lock that is never released expires. In
// NEAR mode a near copy kept before the lock is still served during it
// (the row has not changed before the commit); the unlock drops it on
// every node before it returns, and a lock that is never released drops
// it before it expires (near.go, keepCopiesLocked).
//
// An unlock after a commit may carry the row the transaction wrote
// (UnlockWith; Hibernate's read-write strategy puts it after the update
// in the same way). In DISTRIBUTED and NEAR mode the owner keeps it as
// the key's entry, with a stamp just above the unlock's, and replicates
// it with the unlock; each near holder's notice carries it, and the
// holder keeps it in place of the copy it drops (stamped after the drop,
// and still registered as a holder, so the key's next change reaches it).
// It does so only if the writer held the key's lock alone and the lock was
// in force: the lock's holder count was 1 from its lock to this unlock
// (no other writer locked the key meanwhile, so no commit of the key can
// follow this one's before the unlock), and it had not expired. Otherwise
// the unlock only invalidates, as Unlock does. Either way every copy of
// the row from before the commit is gone before the unlock returns; what
// replaces it is the committed row, which a read after the write could
// only have loaded again. In LOCAL mode the row is not kept: the other
// nodes learn of the change asynchronously.
package l2cache
