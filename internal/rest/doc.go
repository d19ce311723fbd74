// Package rest serves shoal's sample domain as a JSON REST API under
// /rest/api/1.0/, shaped like Bitbucket Data Center's: projects,
// repositories, pull requests (paged, with optimistic versions) and their
// comments.
//
// # Reads go through the L2 cache
//
// Like Bitbucket over Hibernate's second-level cache, every read is served
// from l2cache regions when it can be:
//
//   - entity regions hold projects (by key), repositories (by
//     "KEY/slug"), users (by id) — nonstrict-read-write — and pull
//     requests (by id) — read-write, because they are updated;
//   - a collection region holds each repository's pull request IDs
//     (state=ALL listings);
//   - the query region holds the pages of list queries (project keys,
//     repository slugs, pull request IDs by state, comment pages), each
//     tagged with the query spaces (tables) it read.
//
// # Writes commit first, then invalidate
//
// A pull request update soft-locks the pull request's key (on every node)
// before its transaction and unlocks it after, whatever the outcome, so no
// reader can cache the state from before the commit. Then it bumps the
// "pull_requests" query space, which makes every cached list that read the
// table a miss on every node. Comments bump "comments"; a new repository
// bumps "repositories". A write is visible to the next read on the node
// that made it; on other nodes, once the invalidation arrives (at once
// with l2cache's synchronous invalidation).
//
// # Access
//
// The caller comes from Config.Principal (the authentication middleware
// put it in the request). Projects are visible to everyone; a private
// repository, its pull requests and comments answer 404 to callers without
// READ, as Bitbucket does; updating a pull request or commenting needs
// WRITE (403 without it, 401 for an anonymous caller); creating a
// repository needs ADMIN on the project (or a global admin). Whether a
// caller may read a private repository is decided by the database and
// reused by the node for Config.PermissionTTL (1 s by default), so a
// revocation reaches reads within that time; writes ask every time.
//
// # Errors
//
// Every error is JSON: {"errors":[{"message":"..."}]}, with 400 for
// malformed input (bad JSON, unknown fields, wrong types, invalid UTF-8,
// bad IDs, keys or slugs, bad paging), 401, 403, 404, 405, 409 (a stale
// version, a taken slug), 413 for a body over Config.MaxBodyBytes, 415 for
// a body that is not JSON, and 503 (with Retry-After) while the database
// is unavailable — the handler keeps serving what the cache holds and
// recovers by itself when the database returns.
package rest
