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
// # Pushes: no cache outlives a push, whatever dies when
//
// Bumping the generation after a push is not enough: a node that dies
// between git moving a ref and the bump leaves every node serving the old
// refs. So a push is bracketed, like a soft lock, by BeginPush and
// Push.End. With StoreGenerations, a repository's record in the
// consistent Store (one key: its version is the generation, its value the
// markers of the pushes in progress) goes through these steps:
//
//  1. BeginPush adds a marker for the push, which raises the generation,
//     and returns only once that write is committed. The front starts
//     git receive-pack after that, so no ref moves before the marker is
//     in the store; if the write fails (no quorum within the front's
//     deadline), git never runs.
//  2. While a record holds a marker, Generation answers ErrPushInProgress:
//     the request bypasses the cache, nothing is served from it and
//     nothing is published (productions check the generation again
//     before publishing, and fail to read one).
//  3. Push.End, after git has exited, removes the marker, which raises
//     the generation again.
//
// Why no entry can outlive the push. An entry is served only under the
// generation in its key, read with no marker standing; it is published
// only if the generation read again after git finished is the same, with
// no marker. Take an entry keyed g and a push P whose marker write makes
// the generation g1 > g. Either the entry's production ended (its second
// read) before P's marker write, and git read the refs before any ref of
// P moved: the entry is right for g, and g is never current again after
// P's write, so it is not served after P. Or its second read came after
// P's marker write: then the generation was not g, or a marker stood, and
// the entry was not published. Entries produced while P runs therefore
// never exist, whether git saw the old refs or the new; and those made
// after P's marker has gone (End, or removal as dead, below) carry a
// generation read after git exited or was stopped, so they see the new
// refs. The same holds for the front's info/refs cache, which keeps an
// advertisement under the generation read before git ran and serves it
// only while that generation is current and unmarked.
//
// A dead pusher's marker must not disable caching for ever, and must not
// be removed while its git may still move a ref. The pushing node
// renews its marker every PushLease/6 (a write that raises its sequence
// number) and, if no renewal has succeeded within PushLease/2 of the
// last one being sent, closes Push.Expired: the front kills git at once.
// A reader removes a marker (raising the generation) once it has seen it
// at the same sequence number for PushLease by its own clock, counted
// from a read that returned it, which is no earlier than the write that
// put it there, which was sent no earlier than the pusher's clock started
// its PushLease/2. So a marker is removed at least PushLease/2 after the
// pusher stopped its git, on two clocks that advance at the same rate
// (monotonic time; no agreement on the time of day is needed). The
// default PushLease is 30 s: a push killed with its node stops the
// caching of its repository for at most 30 s after the first lookup that
// sees the marker, on each node, and the first node to remove it ends it
// for all; a pushing node that cannot reach the store for 15 s has its
// push killed. When the node itself dies, the kernel kills its git
// receive-pack with it (the front sets the parent-death signal on Linux),
// so its refs move no further.
//
// What this does not cover: a pushing node frozen (SIGSTOP, a VM pause)
// for more than PushLease/2 while its receive-pack runs on outside it,
// and killed after its marker was removed: that receive-pack can move a
// ref with no marker left and no End to follow. Closing it needs the ref
// update itself fenced (a reference-transaction hook that asks the node),
// and the git this was built against (2.39) can set hooks only through
// core.hooksPath, which would replace the repository's own. Refs changed
// behind shoal's back
// are not covered either (the TTL bounds them, Invalidate repairs them).
//
// Entries are evicted least-recently-read first to stay within a byte
// budget, and expire after a TTL; a file being read survives eviction until
// its last reader closes it. Below a free-disk-space floor the cache steps
// aside: requests bypass it and still succeed. Files left by a previous
// process are removed at start (generations are not persistent, so old
// entries could not be trusted).
package packcache
