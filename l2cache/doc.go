// Package l2cache is shoal's second-level entity cache, shaped like
// Hibernate's as Hazelcast provides it: named regions (entity, collection,
// query, and the update-timestamps that guard queries), each with an access
// strategy (read-only, nonstrict-read-write, read-write).
//
// In LOCAL mode every node caches in its own memory (ristretto, bounded by
// cost) and writes invalidate locally and on the cluster bus. DISTRIBUTED
// mode (a partitioned map across the cluster) is not built yet.
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
// For read-write regions a soft lock is taken (locally and on every node)
// before the update and released after the commit; a locked key reads as a
// miss and refuses puts, and a lock that is never released expires.
package l2cache
