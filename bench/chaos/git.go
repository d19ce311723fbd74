package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// gitRepo is the repository the git checker creates and pushes to.
const gitRepo = "chaosgit"

// GitReport is what the git checker did.
type GitReport struct {
	Pushes           int `json:"pushes"`
	PushFailed       int `json:"push_failed"`
	PushesThenKilled int `json:"pushes_then_killed"`
	RefChecks        int `json:"ref_checks"`
	RefCheckFailed   int `json:"ref_check_failed"` // errors (no answer), not wrong answers
}

// gitChecker pushes commits through random nodes and, after each
// acknowledged push, asks every running node for the refs (ls-remote)
// and fetches the branch through it: each must equal what was pushed, as
// the repository on disk does. Every few pushes the pushing node is
// SIGKILLed right after the acknowledgement, and the check runs through
// the others before it is restarted.
type gitChecker struct {
	e        *Env
	work     string // the client's working repository
	fetch    string // a bare repository fetched into
	disk     string // the repository on the shared disk
	path     string // /scm/PROJECT/REPO.git
	env      []string
	killEach int

	mu sync.Mutex
	r  GitReport
}

func newGitChecker(ctx context.Context, e *Env, dir string) (*gitChecker, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, errors.New("git not found")
	}
	var projects struct{ Values []struct{ Key string } }
	if err := e.getJSON(ctx, 1, api+"/projects?limit=1", &projects); err != nil || len(projects.Values) == 0 {
		return nil, fmt.Errorf("no project: %v", err)
	}
	project := projects.Values[0].Key
	body, _ := json.Marshal(map[string]any{"name": gitRepo, "public": false})
	code, resp, err := doReq(ctx, e.probe, http.MethodPost, "http://"+e.HTTP(1)+api+"/projects/"+project+"/repos", body, true)
	if err != nil || code != http.StatusCreated {
		return nil, fmt.Errorf("creating the repository: %d %s %v", code, resp, err)
	}
	g := &gitChecker{e: e, work: filepath.Join(dir, "work"), fetch: filepath.Join(dir, "fetch.git"), path: "/scm/" + project + "/" + gitRepo + ".git", killEach: 3}
	g.env = append(os.Environ(), "HOME="+dir, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=chaos", "GIT_AUTHOR_EMAIL=chaos@example.com", "GIT_COMMITTER_NAME=chaos", "GIT_COMMITTER_EMAIL=chaos@example.com")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	filepath.WalkDir(filepath.Join(e.dir, "repos"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == gitRepo+".git" {
			g.disk = p
			return fs.SkipAll
		}
		return nil
	})
	if g.disk == "" {
		return nil, errors.New("the repository's directory is not under repos/")
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main", g.work}, {"init", "-q", "--bare", g.fetch}} {
		if _, err := g.git(ctx, "", args...); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (g *gitChecker) url(i int) string {
	return "http://admin:" + adminPassword + "@" + g.e.HTTP(i) + g.path
}

func (g *gitChecker) git(ctx context.Context, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir, cmd.Env = dir, g.env
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func (g *gitChecker) report() *GitReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.r
	return &r
}

func (g *gitChecker) run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	lastKill := 0
	for n := 1; ctx.Err() == nil; n++ {
		sleepCtx(ctx, 1500*time.Millisecond)
		if ctx.Err() != nil {
			return
		}
		if _, err := g.git(ctx, g.work, "commit", "-q", "--allow-empty", "-m", fmt.Sprintf("chaos %d", n)); err != nil {
			if ctx.Err() != nil {
				return // the load ended while git ran (it was killed)
			}
			g.e.rec.violation(Violation{Check: "harness", Detail: "git commit: " + err.Error()})
			return
		}
		head, err := g.git(ctx, g.work, "rev-parse", "HEAD")
		if err != nil {
			return
		}
		up := g.e.upNodes()
		if len(up) == 0 {
			continue // the whole cluster is down
		}
		node := up[rng.IntN(len(up))]
		// Some pushes: the node dies right after acknowledging, when no
		// scheduled fault is under way.
		kill := n-lastKill >= g.killEach && g.e.faultMu.TryLock()
		if kill {
			lastKill = n
		}
		start := time.Now()
		_, err = g.git(ctx, g.work, "push", "-q", g.url(node), "HEAD:refs/heads/main")
		if ctx.Err() != nil {
			if kill {
				g.e.faultMu.Unlock()
			}
			return
		}
		g.e.rec.op(opGitPush, node, start, time.Now(), gitFailure(err))
		if err != nil {
			g.mu.Lock()
			g.r.PushFailed++
			g.mu.Unlock()
			if kill {
				g.e.faultMu.Unlock()
			}
			// the ref may or may not have moved: follow the repository
			if disk, derr := g.git(ctx, "", "--git-dir", g.disk, "rev-parse", "refs/heads/main"); derr == nil && disk != head {
				g.git(ctx, g.work, "reset", "-q", "--hard", disk)
			}
			continue
		}
		acked := time.Now()
		g.mu.Lock()
		g.r.Pushes++
		g.mu.Unlock()
		var fr *FaultRecord
		if kill {
			fr = &FaultRecord{Kind: FaultKillAfterPush, Target: fmt.Sprintf("node%d, right after acknowledging a push", node), start: time.Now()}
			fr.Start = fr.start.Sub(g.e.rec.start)
			if err := g.e.lc.Kill(node); err == nil {
				g.e.markDown(node, "killed after a push")
				g.mu.Lock()
				g.r.PushesThenKilled++
				g.mu.Unlock()
			} else {
				kill = false
				g.e.faultMu.Unlock()
			}
		}
		g.checkRefs(ctx, head, acked, node, kill)
		if kill {
			healStart := time.Now()
			fr.Hold = healStart.Sub(fr.start)
			if err := g.e.restart(context.WithoutCancel(ctx), node); err != nil {
				g.e.rec.violation(Violation{Check: "recovery", Node: node, Detail: "restarting a node killed after a push: " + err.Error()})
			}
			fr.healed = time.Now()
			fr.HealTime = fr.healed.Sub(healStart)
			if err := g.e.waitServing(context.WithoutCancel(ctx), 120*time.Second); err != nil {
				g.e.rec.violation(Violation{Check: "recovery", Node: node, Detail: "after a node killed after a push was restarted: " + err.Error()})
			}
			fr.recovered = time.Now()
			fr.Recovery = fr.recovered.Sub(healStart)
			g.e.addFault(fr)
			g.e.faultMu.Unlock()
			g.checkRefs(ctx, head, acked, node, false)
		}
	}
}

// checkRefs asks every running node for the branch after a push
// acknowledged at acked through node via: ls-remote and a fetch must both
// give head, as the repository on disk does.
func (g *gitChecker) checkRefs(ctx context.Context, head string, acked time.Time, via int, killed bool) {
	disk, err := g.git(ctx, "", "--git-dir", g.disk, "rev-parse", "refs/heads/main")
	if err == nil && disk != head {
		g.e.rec.violation(Violation{Check: "git: acknowledged push not on disk", Detail: fmt.Sprintf("the repository holds main=%s after a push of %s through node%d was acknowledged", disk, head, via)})
	}
	after := ""
	if killed {
		after = fmt.Sprintf(", node%d killed right after", via)
	}
	for _, i := range g.e.upNodes() {
		start := time.Now()
		out, err := g.git(ctx, "", "ls-remote", g.url(i), "refs/heads/main")
		if ctx.Err() != nil {
			return
		}
		g.mu.Lock()
		g.r.RefChecks++
		if err != nil {
			g.r.RefCheckFailed++
		}
		g.mu.Unlock()
		g.e.rec.op(opGitRead, i, start, time.Now(), gitFailure(err))
		if err != nil {
			continue
		}
		got, _, _ := strings.Cut(out, "\t")
		if got != head {
			g.e.rec.violation(Violation{Check: "git: stale refs", Node: i,
				Detail: fmt.Sprintf("node%d advertised main=%q, %v after a push of %s was acknowledged", i, got, start.Sub(acked).Round(time.Millisecond), head),
				Ops: []string{fmt.Sprintf("push %s through node%d, acked %s%s", head, via, g.e.rec.ms(acked), after),
					fmt.Sprintf("ls-remote through node%d %s -> %s", i, g.e.rec.ms(start), got)}})
			continue
		}
		start = time.Now()
		_, err = g.git(ctx, g.fetch, "fetch", "-q", g.url(i), "+refs/heads/main:refs/heads/n"+fmt.Sprint(i))
		if ctx.Err() != nil {
			return
		}
		g.e.rec.op(opGitRead, i, start, time.Now(), gitFailure(err))
		if err != nil {
			if strings.Contains(err.Error(), "not our ref") {
				g.e.rec.violation(Violation{Check: "git: fetch refused", Node: i, Detail: err.Error(),
					Ops: []string{fmt.Sprintf("push %s through node%d, acked %s%s", head, via, g.e.rec.ms(acked), after)}})
			}
			continue
		}
		if got, err := g.git(ctx, g.fetch, "rev-parse", "refs/heads/n"+fmt.Sprint(i)); err == nil && got != head {
			g.e.rec.violation(Violation{Check: "git: stale fetch", Node: i,
				Detail: fmt.Sprintf("a fetch through node%d gave main=%s after a push of %s was acknowledged", i, got, head)})
		}
	}
}

// checkFinal compares every node's refs with the disk once more.
func (g *gitChecker) checkFinal(ctx context.Context) error {
	disk, err := g.git(ctx, "", "--git-dir", g.disk, "rev-parse", "refs/heads/main")
	if err != nil {
		if g.report().Pushes == 0 {
			return nil
		}
		return err
	}
	g.checkRefs(ctx, disk, time.Now(), 0, false)
	return nil
}

// gitFailure is a git command's error for the error windows ("" if none).
func gitFailure(err error) string {
	if err == nil {
		return ""
	}
	return failure(0, nil, err)
}
