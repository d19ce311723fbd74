package gitfront

import (
	"net/http"
	"strings"
)

// PoolName names one of the front's pools.
type PoolName uint8

// The pools. A request belongs to exactly one.
const (
	// PoolWeb serves everything that is not git: REST, UI, cluster API.
	PoolWeb PoolName = iota
	// PoolUpload serves fetches and clones: upload-pack and its ref
	// advertisement.
	PoolUpload
	// PoolReceive serves pushes: receive-pack and its ref advertisement.
	PoolReceive
	numPools
)

// String is the pool's name as it appears in stats and messages.
func (p PoolName) String() string {
	switch p {
	case PoolUpload:
		return "git-upload"
	case PoolReceive:
		return "git-receive"
	case PoolWeb:
		return "web"
	}
	return "unknown"
}

const (
	uploadPack  = "git-upload-pack"
	receivePack = "git-receive-pack"
	uploadCT    = "application/x-git-upload-pack-request"
	receiveCT   = "application/x-git-receive-pack-request"
)

// Classify picks r's pool the way HAProxy ACLs would, from the request
// alone (no repository lookup): a push is recognised first by its path
// suffix, its service= parameter or its Content-Type, then a fetch the
// same way, then any other request from a git client (User-Agent "git/…")
// counts as a fetch; everything else is web. Classify is a pure function
// of r and safe for concurrent use.
func Classify(r *http.Request) PoolName {
	path, ct := r.URL.Path, r.Header.Get("Content-Type")
	var service string
	if strings.HasSuffix(path, "/info/refs") {
		service = r.URL.Query().Get("service")
	}
	switch {
	case strings.HasSuffix(path, "/"+receivePack) || service == receivePack || ct == receiveCT:
		return PoolReceive
	case strings.HasSuffix(path, "/"+uploadPack) || service == uploadPack || ct == uploadCT:
		return PoolUpload
	case isGitAgent(r):
		return PoolUpload
	}
	return PoolWeb
}

// isGitAgent reports whether the User-Agent is a git client's ("git/2.39.5").
func isGitAgent(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("User-Agent"), "git/")
}
