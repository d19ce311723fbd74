package gitfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/internal/httperr"
)

// scmPrefix starts every git path: /scm/{project}/{repo}.git/...
const scmPrefix = "/scm/"

// UploadPacker serves one upload-pack POST (the pack cache). repoName is
// RepoName(project, repo), repoPath the repository's resolved directory,
// gitProtocol the Git-Protocol header (for GIT_PROTOCOL). It writes
// git's response to w and must not write anything when it returns an
// error before producing output, so that the front can still answer with
// an error status. body is the decoded, framing-checked request; when
// reading it fails with ErrMalformed or ErrTooLarge, the packer should
// stop and return that error. It runs under ctx and must stop (and kill
// any git process) when ctx ends. It must be safe for concurrent use.
type UploadPacker interface {
	ServeUploadPack(ctx context.Context, w io.Writer, repoName, repoPath, gitProtocol string, body io.Reader) error
}

// UploadPackerFunc adapts a function to UploadPacker.
type UploadPackerFunc func(ctx context.Context, w io.Writer, repoName, repoPath, gitProtocol string, body io.Reader) error

// ServeUploadPack calls f.
func (f UploadPackerFunc) ServeUploadPack(ctx context.Context, w io.Writer, repoName, repoPath, gitProtocol string, body io.Reader) error {
	return f(ctx, w, repoName, repoPath, gitProtocol, body)
}

// GitConfig configures a GitHandler.
type GitConfig struct {
	// ReposDir holds the bare repositories as ReposDir/{project}/{repo}.git.
	// Required; created if missing. The nodes of a cluster share it.
	ReposDir string
	// Authorizer decides every request. Required.
	Authorizer Authorizer
	// UploadPacker, if set, serves upload-pack POSTs; nil runs git.
	UploadPacker UploadPacker
	// OnPush, if set, is called after every receive-pack that git ran
	// (authorized, body headers accepted, PushGuard agreed), whatever
	// git's outcome (refs may have moved even when the push failed), with
	// a context that outlives the client. RefUpdates(ctx) lists the
	// updates the client asked for. The request holds its git-receive
	// slot until OnPush returns, so it should be quick. Caches must not
	// rely on it: a node can die before it runs (PushGuard is for them).
	OnPush func(ctx context.Context, project, repo string)
	// PushGuard, if set, is asked before every receive-pack may move a
	// ref and told when it has exited: the pack cache's BeginPush, which
	// keeps every cache of the repository from outliving the push. A
	// push it refuses never reaches git.
	PushGuard PushGuard
	// PushGuardTimeout bounds PushGuard's BeginPush and End; a push whose
	// BeginPush does not succeed within it is refused. Default 10 s.
	PushGuardTimeout time.Duration
	// QuarantineAge is how old (since its last change) a quarantine
	// directory (objects/tmp_objdir-incoming-*, left by a receive-pack
	// killed mid-push) must be before it is removed; the sweep runs
	// after a push that PushGuard says was the repository's only one in
	// progress. Default 1 h.
	QuarantineAge time.Duration
	// AdvertGenerations, if set, turns on the ref advertisement cache
	// (off by default, as in Bitbucket): GET info/refs for upload-pack is
	// served from memory while the repository's generation is unchanged.
	// Only right when every push goes through PushGuard, whose tickets
	// keep the generation from standing still across a ref change (the
	// pack cache's BeginPush and StoreGenerations do; see packcache).
	AdvertGenerations Generations
	// AdvertCacheBytes bounds the advertisement cache; default 64 MiB.
	AdvertCacheBytes int64
	// GitBin is the git executable; default "git" from PATH.
	GitBin string
	// MaxRequestBytes bounds an upload-pack request body after gzip
	// decoding; default 32 MiB (wants for about 500k refs).
	MaxRequestBytes int64
	// MaxPushBytes bounds a receive-pack body after decoding; default 2 GiB.
	MaxPushBytes int64
	// Logger receives failures; default slog.Default().
	Logger *slog.Logger
}

func (c *GitConfig) validate() error {
	if c.ReposDir == "" || c.Authorizer == nil {
		return fmt.Errorf("%w: GitConfig needs ReposDir and Authorizer", ErrConfig)
	}
	if c.GitBin == "" {
		c.GitBin = "git"
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 32 << 20
	}
	if c.MaxPushBytes <= 0 {
		c.MaxPushBytes = 2 << 30
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.AdvertCacheBytes <= 0 {
		c.AdvertCacheBytes = 64 << 20
	}
	if c.PushGuardTimeout <= 0 {
		c.PushGuardTimeout = 10 * time.Second
	}
	if c.QuarantineAge <= 0 {
		c.QuarantineAge = time.Hour
	}
	return nil
}

// GitStats counts git requests and processes. Running is a gauge.
type GitStats struct {
	InfoRefs, UploadPacks, ReceivePacks uint64
	// Refused counts requests answered 4xx (bad path, name, header or
	// body; authorization); Failed those answered 5xx or cut short.
	Refused, Failed uint64
	// Processes counts git processes started; Running those alive now.
	Processes uint64
	Running   int64
	// BytesOut counts response bytes written to clients.
	BytesOut uint64
	// AdvertHits and AdvertMisses count ref advertisements served from
	// the advertisement cache and from git while it is on.
	AdvertHits, AdvertMisses uint64
	// PushesRefused counts pushes refused because PushGuard could not
	// record them; PushesLost those whose git was killed because the
	// guard stopped vouching; QuarantinesSwept the stale quarantine
	// directories removed.
	PushesRefused, PushesLost, QuarantinesSwept uint64
}

type gitCounters struct {
	infoRefs, uploads, receives, refused, failed, processes, bytesOut atomic.Uint64
	advertHits, advertMisses                                          atomic.Uint64
	pushesRefused, pushesLost, swept                                  atomic.Uint64
	running                                                           atomic.Int64
}

// GitHandler serves git's smart HTTP protocol. It expects the
// Authenticate middleware in front of it (an absent principal is
// anonymous). Safe for concurrent use.
type GitHandler struct {
	cfg     GitConfig
	root    string // ReposDir with symlinks resolved
	env     []string
	adverts *advertCache // nil when off
	c       gitCounters

	// hookAfterReceive, when set (by tests, before use), runs after
	// receive-pack exits; true simulates a crash there: the handler
	// aborts without ending the push or calling OnPush.
	hookAfterReceive atomic.Pointer[func(repo string) bool]
}

// NewGitHandler checks cfg, creates ReposDir if missing and resolves it.
// Errors: ErrConfig.
func NewGitHandler(cfg GitConfig) (*GitHandler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(cfg.ReposDir)
	if err == nil {
		err = os.MkdirAll(abs, 0o700)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: ReposDir: %v", ErrConfig, err)
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("%w: ReposDir: %v", ErrConfig, err)
	}
	g := &GitHandler{cfg: cfg, root: root, env: gitEnv(nil)}
	if cfg.AdvertGenerations != nil {
		g.adverts = newAdvertCache(cfg.AdvertCacheBytes)
	}
	return g, nil
}

// Stats is a snapshot of the handler's counters.
func (g *GitHandler) Stats() GitStats {
	c := &g.c
	return GitStats{InfoRefs: c.infoRefs.Load(), UploadPacks: c.uploads.Load(),
		ReceivePacks: c.receives.Load(), Refused: c.refused.Load(), Failed: c.failed.Load(),
		Processes: c.processes.Load(), Running: c.running.Load(), BytesOut: c.bytesOut.Load(),
		AdvertHits: c.advertHits.Load(), AdvertMisses: c.advertMisses.Load(),
		PushesRefused: c.pushesRefused.Load(), PushesLost: c.pushesLost.Load(), QuarantinesSwept: c.swept.Load()}
}

// gitEnv is this process's environment without GIT_* variables (a
// caller's GIT_DIR must not steer the server's git), plus extra.
func gitEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// gitOp is which of the three smart HTTP endpoints a request hits.
type gitOp uint8

const (
	opInfoRefs gitOp = iota + 1
	opUploadPack
	opReceivePack
)

// gitRequest is a parsed git request.
type gitRequest struct {
	op            gitOp
	service       string // git-upload-pack or git-receive-pack
	project, repo string
	protocol      string // the Git-Protocol header
}

// action is what the request needs on the repository.
func (q *gitRequest) action() Action {
	if q.service == receivePack {
		return ActionWrite
	}
	return ActionRead
}

func (q *gitRequest) name() string { return RepoName(q.project, q.repo) }

// RepoName is the repository's name as the front passes it to the
// UploadPacker: "project/repo". Pack cache invalidation (OnPush) must use
// the same name.
func RepoName(project, repo string) string { return project + "/" + repo }

// ServeHTTP answers a git smart HTTP request; anything else under /scm/
// gets 404, a wrong method 405, bad names or headers 400.
func (g *GitHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q, err := parseGitRequest(r)
	if err == nil {
		err = g.authorize(w, r, q)
	}
	var dir string
	if err == nil {
		dir, err = resolveRepo(g.root, q.project, q.repo)
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	switch q.op {
	case opInfoRefs:
		g.c.infoRefs.Add(1)
		g.infoRefs(w, r, q, dir)
	case opUploadPack:
		g.c.uploads.Add(1)
		g.uploadPack(w, r, q, dir)
	case opReceivePack:
		g.c.receives.Add(1)
		g.receivePack(w, r, q, dir)
	}
}

// fail answers a request refused before any output.
func (g *GitHandler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := statusOf(err)
	if status >= 500 {
		g.c.failed.Add(1)
		id := httperr.RequestID(w)
		g.cfg.Logger.Error("gitfront: git request failed", "path", r.URL.Path, "request_id", id, "err", err)
		setRetryAfter(w, 0)
		msg += " (request ID " + id + ")"
	} else {
		g.c.refused.Add(1)
	}
	writeError(w, r, status, msg)
}

// parseGitRequest checks the path, method, service and headers.
func parseGitRequest(r *http.Request) (*gitRequest, error) {
	rest, ok := strings.CutPrefix(r.URL.Path, scmPrefix)
	parts := strings.SplitN(rest, "/", 3)
	if !ok || len(parts) != 3 {
		return nil, newHTTPError(http.StatusNotFound, nil, "not a git path: want /scm/{project}/{repo}.git/...")
	}
	repo, ok := strings.CutSuffix(parts[1], ".git")
	if !ok {
		return nil, newHTTPError(http.StatusNotFound, nil, "repository URLs end in .git: /scm/{project}/{repo}.git")
	}
	if err := errors.Join(ValidName(parts[0]), ValidName(repo)); err != nil {
		return nil, newHTTPError(http.StatusBadRequest, err, err.Error())
	}
	q := &gitRequest{project: parts[0], repo: repo, protocol: r.Header.Get("Git-Protocol")}
	if err := checkProtocolHeader(q.protocol); err != nil {
		return nil, err
	}
	return q, q.route(r, parts[2])
}

// route sets the operation from the path's tail and checks the method,
// service and Content-Type.
func (q *gitRequest) route(r *http.Request, tail string) error {
	switch tail {
	case "info/refs":
		q.op, q.service = opInfoRefs, r.URL.Query().Get("service")
		if q.service != uploadPack && q.service != receivePack {
			return newHTTPError(http.StatusBadRequest, nil,
				"only smart HTTP is served: info/refs needs service=git-upload-pack or service=git-receive-pack")
		}
		return checkMethod(r, http.MethodGet)
	case uploadPack:
		q.op, q.service = opUploadPack, uploadPack
		return checkPost(r, uploadCT)
	case receivePack:
		q.op, q.service = opReceivePack, receivePack
		return checkPost(r, receiveCT)
	}
	return newHTTPError(http.StatusNotFound, nil, "unknown git endpoint "+tail)
}

func checkMethod(r *http.Request, want string) error {
	if r.Method == want || want == http.MethodGet && r.Method == http.MethodHead {
		return nil
	}
	return newHTTPError(http.StatusMethodNotAllowed, nil, r.URL.Path+" takes "+want)
}

func checkPost(r *http.Request, contentType string) error {
	if err := checkMethod(r, http.MethodPost); err != nil {
		return err
	}
	if ct := r.Header.Get("Content-Type"); ct != contentType {
		return newHTTPError(http.StatusUnsupportedMediaType, nil,
			fmt.Sprintf("Content-Type %q, want %s", ct, contentType))
	}
	return nil
}

// checkProtocolHeader accepts what git sends in Git-Protocol
// ("version=2", colon-separated keys): short printable ASCII, since it
// reaches git's environment.
func checkProtocolHeader(v string) error {
	if len(v) > 256 {
		return newHTTPError(http.StatusBadRequest, nil, "Git-Protocol header too long")
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return newHTTPError(http.StatusBadRequest, nil, "Git-Protocol header holds non-printable bytes")
		}
	}
	return nil
}

// isV2 reports whether the client asked for protocol version 2.
func isV2(protocol string) bool {
	for kv := range strings.SplitSeq(protocol, ":") {
		if kv == "version=2" {
			return true
		}
	}
	return false
}

// authorize asks the Authorizer. An anonymous caller refused (forbidden
// or not found) gets 401 so that git asks for credentials; a known one
// gets 403 or 404.
func (g *GitHandler) authorize(w http.ResponseWriter, r *http.Request, q *gitRequest) error {
	p, _ := PrincipalFrom(r.Context())
	err := g.cfg.Authorizer.Authorize(r.Context(), p, q.project, q.repo, q.action())
	switch {
	case err == nil:
		return nil
	case p.Anonymous() && (errors.Is(err, ErrForbidden) || errors.Is(err, ErrNotFound)):
		w.Header().Set("WWW-Authenticate", realm)
		return newHTTPError(http.StatusUnauthorized, err, "authentication required")
	case errors.Is(err, ErrForbidden):
		return newHTTPError(http.StatusForbidden, err,
			fmt.Sprintf("%s may not %s %s", p.Name, q.action(), q.name()))
	case errors.Is(err, ErrNotFound):
		return newHTTPError(http.StatusNotFound, err, "repository not found")
	}
	return newHTTPError(http.StatusServiceUnavailable, err, "authorization unavailable")
}
