package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/shoal-dev/shoal/internal/cli"
)

// The deployment files in deploy/ cannot rot: every shoal command they
// run, with the flags and SHOAL_ variables they give it, is run here
// through the real binary — the compose file's init script for real (its
// CA, certificates and gossip key), each node with --print-config, which
// parses and validates the whole configuration as a start would and
// exits. Container paths are mapped into a scratch directory. The
// systemd unit goes through systemd-analyze verify when it is installed,
// and the compose file through docker compose config when Docker is.

// deployDir is the repository's deploy folder.
const deployDir = "../../deploy"

// paths maps the deployment's absolute paths into a scratch directory.
type paths struct{ root string }

func (p paths) mapStr(s string) string {
	for _, pre := range []string{"/var/lib/shoal", "/etc/shoal", "/srv/shoal"} {
		s = strings.ReplaceAll(s, pre, filepath.Join(p.root, strings.TrimPrefix(pre, "/")))
	}
	return s
}

func (p paths) mkdirs(t *testing.T) {
	for _, d := range []string{"var/lib/shoal/data", "var/lib/shoal/repos", "var/lib/shoal/secrets", "var/lib/shoal/ca", "etc/shoal/tls", "srv/shoal/repos"} {
		if err := os.MkdirAll(filepath.Join(p.root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

// findCommand is the command args start with (the longest name) and the
// rest of args.
func findCommand(t *testing.T, args []string) (*command, []string) {
	t.Helper()
	var best *command
	n := 0
	for _, c := range commands {
		words := strings.Fields(c.name)
		if len(words) > n && len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			best, n = c, len(words)
		}
	}
	if best == nil {
		t.Fatalf("no shoal command %q", strings.Join(args, " "))
	}
	return best, args[n:]
}

// checkEnvNames: every SHOAL_ variable names a flag of the command.
func checkEnvNames(t *testing.T, where string, c *command, env map[string]string) {
	t.Helper()
	s, _ := c.newSet()
	for k := range env {
		name, ok := strings.CutPrefix(k, cli.EnvPrefix)
		if !ok {
			continue
		}
		flag := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		if s.Lookup(flag) == nil {
			t.Errorf("%s: %s is no flag of 'shoal %s'", where, k, c.name)
		}
	}
}

// runShoal runs the binary with args and only env (and PATH, HOME) and
// fails the test unless it exits 0.
func runShoal(t *testing.T, where string, env map[string]string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shoalBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s: shoal %s: %v\n%s", where, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkNode runs 'shoal node' with the deployment's arguments and
// environment and --print-config, and checks a few values it printed.
func checkNode(t *testing.T, where string, args []string, env map[string]string, want map[string]string) {
	t.Helper()
	c, rest := findCommand(t, args)
	if c.name != "node" {
		t.Fatalf("%s runs 'shoal %s', want 'shoal node'", where, c.name)
	}
	checkEnvNames(t, where, c, env)
	out := runShoal(t, where, env, append(append([]string{"node"}, rest...), "--print-config")...)
	var printed map[string]any
	if err := yaml.Unmarshal([]byte(out), &printed); err != nil {
		t.Fatalf("%s: --print-config printed no YAML: %v\n%s", where, err, out)
	}
	for k, v := range want {
		if got := printed[k]; got == nil || !strings.Contains(yamlString(got), v) {
			t.Errorf("%s: %s is %v, want %q in it", where, k, got, v)
		}
	}
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

func strs(v any) []string {
	var out []string
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			out = append(out, stringOf(e))
		}
	case string:
		out = strings.Fields(x)
	}
	return out
}

func stringOf(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return strings.TrimSpace(yamlString(v))
}

func TestDeployCompose(t *testing.T) {
	docs := readYAML(t, filepath.Join(deployDir, "docker-compose.yml"))
	services, _ := docs[0]["services"].(map[string]any)
	if services == nil {
		t.Fatal("docker-compose.yml has no services")
	}
	p := paths{root: t.TempDir()}
	p.mkdirs(t)

	// The init service's script, run for real with this binary.
	init, _ := services["init"].(map[string]any)
	script := strings.Join(strs(init["command"]), "\n")
	if init == nil || !strings.Contains(script, "shoal tls init") || !strings.Contains(script, "shoal keyring generate") {
		t.Fatalf("the init service does not make the CA and the gossip key: %v", init)
	}
	if cmd, _ := init["command"].([]any); len(cmd) > 0 {
		script = stringOf(cmd[0])
	}
	script = strings.ReplaceAll(p.mapStr(script), "$$", "$")
	sh := exec.Command("/bin/sh", "-ec", script)
	sh.Env = []string{"PATH=" + filepath.Dir(shoalBin) + ":" + os.Getenv("PATH")}
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the init script: %v\n%s\n%s", err, out, script)
	}
	for _, f := range []string{"ca.pem", "shoal1.pem", "shoal1-key.pem", "shoal3-key.pem", "cluster.yaml"} {
		if _, err := os.Stat(filepath.Join(p.root, "var/lib/shoal/secrets", f)); err != nil {
			t.Errorf("the init script made no secrets/%s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(p.root, "var/lib/shoal/secrets/ca-key.pem")); err == nil {
		t.Error("the CA's key was copied to the nodes' secrets")
	}

	nodes := 0
	for name, v := range services {
		svc, _ := v.(map[string]any)
		args := strs(svc["command"])
		if len(args) == 0 || args[0] != "node" {
			continue
		}
		nodes++
		env := map[string]string{}
		if e, ok := svc["environment"].(map[string]any); ok {
			for k, v := range e {
				env[k] = p.mapStr(stringOf(v))
			}
		}
		for i := range args {
			args[i] = p.mapStr(args[i])
		}
		if vols := strs(svc["volumes"]); !slices.ContainsFunc(vols, func(s string) bool { return strings.HasPrefix(s, "repos:") }) ||
			!slices.ContainsFunc(vols, func(s string) bool {
				return strings.HasPrefix(s, "data") && strings.Contains(s, ":/var/lib/shoal/data")
			}) {
			t.Errorf("%s: volumes %v: want its own data volume and the shared repos", name, vols)
		}
		checkNode(t, "docker-compose.yml "+name, args, env, map[string]string{"name": name, "preset": "lan", "gossip-key": "32 bytes", "join": "7946", "tls-cert": name + ".pem"})
	}
	if nodes != 3 {
		t.Errorf("%d node services, want 3", nodes)
	}
	if _, ok := services["postgres"]; !ok {
		t.Error("no postgres service")
	}
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		if out, err := exec.Command("docker", "compose", "-f", filepath.Join(deployDir, "docker-compose.yml"), "config", "-q").CombinedOutput(); err != nil {
			t.Errorf("docker compose config: %v\n%s", err, out)
		}
	} else {
		t.Log("docker compose is not installed: the compose file was checked by the parser above only")
	}
}

var k8sVar = regexp.MustCompile(`\$\(([A-Z_]+)\)`)

func TestDeployKubernetes(t *testing.T) {
	docs := readYAML(t, filepath.Join(deployDir, "kubernetes", "shoal.yaml"))
	kinds := map[string]map[string]any{}
	for _, d := range docs {
		kinds[stringOf(d["kind"])+"/"+stringOf(d["metadata"].(map[string]any)["name"])] = d
	}
	for _, k := range []string{"Service/shoal-headless", "Service/shoal", "StatefulSet/shoal", "PodDisruptionBudget/shoal"} {
		if kinds[k] == nil {
			t.Fatalf("no %s in shoal.yaml (have %v)", k, kinds)
		}
	}
	if spec := kinds["Service/shoal-headless"]["spec"].(map[string]any); spec["clusterIP"] != "None" || spec["publishNotReadyAddresses"] != true {
		t.Errorf("the headless Service: clusterIP %v, publishNotReadyAddresses %v", spec["clusterIP"], spec["publishNotReadyAddresses"])
	}
	sts := kinds["StatefulSet/shoal"]["spec"].(map[string]any)
	if sts["serviceName"] != "shoal-headless" {
		t.Errorf("serviceName %v", sts["serviceName"])
	}
	pod := sts["template"].(map[string]any)["spec"].(map[string]any)
	ctr := pod["containers"].([]any)[0].(map[string]any)
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if !strings.Contains(yamlString(ctr[probe]), "path: "+path) {
			t.Errorf("%s: want GET %s: %v", probe, path, ctr[probe])
		}
	}

	// The node's settings as the kubelet would give them to shoal-0.
	p := paths{root: t.TempDir()}
	p.mkdirs(t)
	tlsDir := filepath.Join(p.root, "etc/shoal/tls")
	runShoal(t, "tls init", nil, "tls", "init", "--dir", tlsDir)
	runShoal(t, "tls issue", nil, "tls", "issue", "shoal-0", "--dir", tlsDir)
	key := strings.TrimSpace(runShoal(t, "keyring generate", nil, "keyring", "generate"))
	vars := map[string]string{}
	env := map[string]string{}
	for _, e := range ctr["env"].([]any) {
		e := e.(map[string]any)
		name := stringOf(e["name"])
		var val string
		switch {
		case e["value"] != nil:
			val = k8sVar.ReplaceAllStringFunc(stringOf(e["value"]), func(m string) string { return vars[k8sVar.FindStringSubmatch(m)[1]] })
		case strings.Contains(yamlString(e["valueFrom"]), "metadata.name"):
			val = "shoal-0"
		case strings.Contains(yamlString(e["valueFrom"]), "status.podIP"):
			val = "10.244.1.7"
		case strings.Contains(yamlString(e["valueFrom"]), "shoal-gossip"):
			val = key
		case strings.Contains(yamlString(e["valueFrom"]), "shoal-db"):
			val = "postgres://shoal:pw@postgres.shoal:5432/shoal"
		default:
			t.Fatalf("env %s: %v", name, e)
		}
		vars[name] = val
		if strings.HasPrefix(name, cli.EnvPrefix) {
			env[name] = p.mapStr(val)
		}
	}
	args := strs(ctr["args"])
	checkNode(t, "shoal.yaml StatefulSet", args, env, map[string]string{"name": "shoal-0", "bind": "10.244.1.7:7946",
		"join": "shoal-headless:7946", "preset": "lan", "tls-cert": "shoal-0.pem", "gossip-key": "32 bytes"})
}

func TestDeploySystemd(t *testing.T) {
	unit := filepath.Join(deployDir, "systemd", "shoal.service")
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var exec_ string
	keys := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = true
			if k == "ExecStart" {
				exec_ = v
			}
		}
	}
	for _, k := range []string{"User", "NoNewPrivileges", "ProtectSystem", "PrivateTmp", "CapabilityBoundingSet", "SystemCallFilter", "StateDirectory"} {
		if !keys[k] {
			t.Errorf("the unit has no %s=", k)
		}
	}
	args := strings.Fields(exec_)
	if len(args) < 2 || filepath.Base(args[0]) != "shoal" {
		t.Fatalf("ExecStart=%s", exec_)
	}
	p := paths{root: t.TempDir()}
	p.mkdirs(t)
	// /etc/shoal/shoal.yaml is the example next to the unit.
	example, err := os.ReadFile(filepath.Join(deployDir, "systemd", "shoal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.root, "etc/shoal/shoal.yaml"), []byte(p.mapStr(string(example))), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range args {
		args[i] = p.mapStr(args[i])
	}
	key := strings.TrimSpace(runShoal(t, "keyring generate", nil, "keyring", "generate"))
	// shoal.env, as the unit's comment says
	env := map[string]string{"SHOAL_GOSSIP_KEY": key, "SHOAL_DB": "postgres://shoal:pw@db.example.net/shoal"}
	checkNode(t, "shoal.service", args[1:], env, map[string]string{"name": "node-a", "preset": "lan", "join": "10.0.0.12:7946",
		"repos-dir": "srv/shoal/repos", "tls-key": "node-a-key.pem", "gossip-key": "32 bytes"})

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze is not installed: the unit was checked by the parser above only")
		return
	}
	// verify wants ExecStart's program to exist: this test's binary.
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "shoal.service")
	if err := os.WriteFile(local, bytes.ReplaceAll(b, []byte("/usr/local/bin/shoal"), []byte(shoalBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", local).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestDeployDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	stages := regexp.MustCompile(`(?m)^FROM `).FindAllStringIndex(df, -1)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(stages))
	}
	final := df[stages[len(stages)-1][0]:]
	for what, re := range map[string]string{
		"a static build of ./cmd/shoal":   `CGO_ENABLED=0 go build[^\n]*(\\\n[^\n]*)*\./cmd/shoal`,
		"git in the runtime image":        `apt-get install[^\n]* git`,
		"a health check on /readyz":       `HEALTHCHECK[^\n]*(\\\n[^\n]*)*/readyz`,
		"a non-root user":                 `(?m)^USER [1-9][0-9]*`,
		"the binary from the build stage": `COPY --from=build /out/shoal`,
	} {
		if !regexp.MustCompile(re).MatchString(final) && !regexp.MustCompile(re).MatchString(df) {
			t.Errorf("the Dockerfile lacks %s (%s)", what, re)
		}
	}
	if !regexp.MustCompile(`(?m)^USER [1-9]`).MatchString(final) {
		t.Error("the final stage does not run as a non-root user")
	}
	// its SHOAL_ defaults are node settings
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(SHOAL_[A-Z_]+)=(\S+)`).FindAllStringSubmatch(df, -1) {
		env[m[1]] = m[2]
	}
	c, _ := findCommand(t, []string{"node"})
	checkEnvNames(t, "Dockerfile", c, env)
	if len(env) == 0 {
		t.Error("the Dockerfile sets no SHOAL_ defaults")
	}
}
