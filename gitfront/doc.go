// Package gitfront is a shoal node's HTTP front: one handler that
// classifies every request into a bounded pool (git-upload, git-receive,
// web), authenticates the caller, and serves git's smart HTTP protocol
// from bare repositories on disk with real git processes.
//
// The pieces compose like net/http middleware and are usable alone:
//
//   - Classify and Pool: the request's pool, and a concurrency bound with a
//     bounded, timed queue; a full pool answers 503 with Retry-After and
//     never delays the others.
//   - Authenticate: Basic (password or access token) and Bearer
//     credentials checked by an Authenticator; the caller is read
//     downstream with PrincipalFrom.
//   - GitHandler: GET info/refs, POST git-upload-pack and git-receive-pack
//     under /scm/{project}/{repo}.git/, authorized per request by an
//     Authorizer, with upload-pack optionally served by an UploadPacker
//     (the pack cache), a PushGuard asked before every receive-pack may
//     move a ref (a push it refuses is answered in-band and never reaches
//     git; git is killed if it stops vouching), OnPush after every push,
//     stale push quarantines swept, and an optional ref advertisement
//     cache keyed by the repository's generation.
//   - InitBare: creates a bare repository the way the front expects it.
//   - Front: all of it behind one http.Handler, with Stats, Drain for a
//     graceful stop (clones in flight complete) and ReadyHandler for
//     /readyz.
package gitfront
