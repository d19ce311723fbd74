// Package packcache serves repeated git clones and fetches from local disk
// instead of running git for each of them, like Bitbucket's SCM cache, with
// Gitaly's streaming discipline.
//
// A request to git-upload-pack (protocol v0/v1 or v2, stateless as over
// HTTP) is decoded and, when the cache fully understands it and it needs
// no negotiation (no "have" lines, "done" sent), reduced to a Key: the
// repository, its ref generation, the protocol version, the sorted unique
// wants, the shallow and deepen settings, the normalised filter and the
// capabilities that change the response. Anything else bypasses the cache
// and goes straight to git.
//
// A v2 "command=ls-refs" request (the ref listing a v2 clone or fetch
// asks for before its fetch) is cached too when Config.LsRefs is set (the
// node sets it with --ref-advert-cache, off by default as Bitbucket's ref
// advertisement cache is, and as the front's info/refs cache for v0/v1
// is): its key is the repository, its
// generation, the protocol version, the object format and the arguments
// that change the listing (symrefs, peel, unborn, and the ref-prefix
// arguments sorted and unique, since git lists the refs matching any of
// them in ref order); agent and session-id are left out. What git lists
// depends on the refs (names, targets, HEAD), on objects (peel), which
// never change, and on the repository's configuration. The refs change
// only by a push, which bumps the generation; that is the assumption the
// fetch entries already rest on (a v2 want-ref, or a v0 want of a tip a
// push removed, is only right for the refs of its generation). A stale
// listing misleads more visibly than a stale pack, though: it names the
// refs themselves, so it stays behind the operator's switch. Like a pack,
// it is not safe against refs or configuration
// (uploadpack.hideRefs, lsrefs.unborn) changed behind shoal's back; the
// TTL bounds that, and Invalidate is the remedy. An ls-refs argument git
// does not know bypasses the cache (git answers it); a known one in the
// wrong shape ("peel x", "ref-prefix" without its space) is malformed. A
// listing is published only if it ends with its flush and holds nothing
// but ref lines: an ERR line or a cut-off response is not.
//
// On a miss one "git upload-pack --stateless-rpc" process writes the
// response into a new file in the cache directory; the requester and every
// identical request that arrives meanwhile read that growing file. Git
// writes as fast as it can whatever the readers' speed, and production
// goes on when every reader has left, so the entry is ready for the next
// clone (bounded by Config.ProduceTimeout and Close). The entry is
// published only if git exited 0, the response ends as the protocol
// requires and the repository's generation did not change meanwhile;
// otherwise its readers get an error (after the bytes git wrote, so a
// client sees git's own message) and the file is removed. A hit streams
// the file with io.Copy from an *os.File, so sendfile applies when the
// destination allows it.
//
// Invalidate bumps a repository's generation through the Generations seam
// and drops its local entries. Because the generation is part of the key,
// a node that missed an invalidation broadcast still misses its old
// entries once the generation store has moved on.
//
// Entries are evicted least-recently-read first to stay within a byte
// budget, and expire after a TTL; a file being read survives eviction until
// its last reader closes it. Below a free-disk-space floor the cache steps
// aside: requests bypass it and still succeed. Files left by a previous
// process are removed at start (generations are not persistent, so old
// entries could not be trusted).
package packcache
