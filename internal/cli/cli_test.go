package cli

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
)

type settings struct {
	Name  string
	Port  int
	Wait  time.Duration
	Size  int64
	Free  uint64
	On    bool
	Peers []string
	Inner struct{ Depth int }
}

func newSet(s *settings) *Set {
	set := New("test", "[ARG...]", "A test.")
	set.String(&s.Name, "name", "a name")
	set.Int(&s.Port, "port", "a port")
	set.Duration(&s.Wait, "wait", "a wait")
	set.Size(&s.Size, "size", "a size")
	set.USize(&s.Free, "free", "a floor")
	set.Bool(&s.On, "on", "a switch")
	set.List(&s.Peers, "peer", "peers")
	set.Int(&s.Inner.Depth, "depth", "a nested field")
	return set
}

func env(m map[string]string) Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("name: file\nport: 3\nwait: 2s\nsize: 1GiB\npeer: [a, b]\nother: x\n"), 0o644)
	s := settings{Name: "default", Port: 1, Size: 64 << 20}
	set := newSet(&s)
	pos, err := set.Parse([]string{"first", "--port", "9", "--config", file, "second", "--", "--not-a-flag"},
		Options{Env: env(map[string]string{"SHOAL_PORT": "8", "SHOAL_WAIT": "1s", "SHOAL_FREE": "2KiB", "SHOAL_ON": ""}),
			Known: func(n string) bool { return n == "other" }})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, " ") != "first second --not-a-flag" {
		t.Errorf("positional %q", pos)
	}
	want := settings{Name: "file", Port: 9, Wait: time.Second, Size: 1 << 30, Free: 2048, Peers: []string{"a", "b"}}
	if s.Name != want.Name || s.Port != want.Port || s.Wait != want.Wait || s.Size != want.Size || s.Free != want.Free || s.On || len(s.Peers) != 2 {
		t.Errorf("got %+v, want %+v", s, want)
	}
	for name, src := range map[string]string{"name": FromFile, "port": FromFlag, "wait": FromEnv, "on": FromDefault, "peer": FromFile} {
		if got := set.Lookup(name).Source; got != src {
			t.Errorf("%s from %s, want %s", name, got, src)
		}
	}
}

func TestParseMistakes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		file string
		want string
	}{
		{[]string{"--port", "x"}, nil, "", `--port "x": "x" is not a whole number`},
		{[]string{"--nope"}, nil, "", "flag provided but not defined: --nope"},
		{nil, map[string]string{"SHOAL_WAIT": "soon"}, "", `$SHOAL_WAIT="soon": "soon" is not a duration`},
		{nil, map[string]string{"SHOAL_SIZE": "-1"}, "", `"-1" is not a size`},
		{nil, nil, "nmae: x\n", `c.yaml:1: unknown setting "nmae"`},
		{nil, nil, "port: [1, 2]\n", "port: want a single value"},
		{nil, nil, "size: 9999999999TiB\n", "too large"},
		{nil, nil, "config: other.yaml\n", "cannot be set in a configuration file"},
		{nil, nil, "port: 1\n\t- bad", "c.yaml"},
	} {
		var s settings
		set := newSet(&s)
		args := tc.args
		if tc.file != "" {
			f := filepath.Join(dir, "c.yaml")
			os.WriteFile(f, []byte(tc.file), 0o644)
			args = append(args, "--config", f)
		}
		_, err := set.Parse(args, Options{Env: env(tc.env)})
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v %q: %v, want a UsageError with %q", tc.args, tc.env, tc.file, err, tc.want)
		}
	}
	var s settings
	if _, err := newSet(&s).Parse([]string{"-h"}, Options{Env: env(nil)}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// A configuration's FieldError is explained with the flag bound to the
// field, found through the configuration's struct.
func TestExplain(t *testing.T) {
	var s settings
	set := newSet(&s)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{config.Invalid("x", "Port", 70000, "0 to 65535"), "--port 70000: want 0 to 65535"},
		{config.Within("Inner", config.Invalid("x", "Depth", -1, "at least 0")), "--depth -1: want at least 0"},
		{config.Invalid("x", "Name", "", "a name"), `--name "": want a name`},
		{config.Invalid("x", "Missing", 1, "?"), "x: Missing 1: want ?"},
	} {
		if got := set.Explain(&s, tc.err).Error(); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

// Help and PrintConfig are written from the definitions; what
// PrintConfig writes, the file reader takes back.
func TestHelpAndPrintConfig(t *testing.T) {
	s := settings{Name: "n", Port: 7, Size: 64 << 20, On: true, Peers: []string{"p:1"}}
	set := newSet(&s)
	if _, err := set.Parse(nil, Options{Env: env(map[string]string{"SHOAL_NAME": "e"})}); err != nil {
		t.Fatal(err)
	}
	var h bytes.Buffer
	set.Help(&h)
	for _, want := range []string{"usage: shoal test [flags] [ARG...]", "--size size", "(default 64MiB)", `(default "n")`, "--on ", "$SHOAL_<NAME>"} {
		if !strings.Contains(h.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, h.String())
		}
	}
	s.Port = 8 // as a configuration's Validate derives a value
	var pc bytes.Buffer
	set.PrintConfig(&pc)
	for _, want := range []string{`name: "e"`, "# env $SHOAL_NAME", "port: 8", "# derived", `size: "64MiB"`, `peer: ["p:1"]`, "on: true"} {
		if !strings.Contains(pc.String(), want) {
			t.Errorf("print-config lacks %q:\n%s", want, pc.String())
		}
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, pc.Bytes(), 0o644)
	var back settings
	if _, err := newSet(&back).Parse([]string{"--config", file}, Options{Env: env(nil)}); err != nil {
		t.Fatal(err)
	}
	if back.Name != "e" || back.Port != 8 || back.Size != 64<<20 || !back.On || len(back.Peers) != 1 {
		t.Errorf("read back %+v", back)
	}
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true}, {"64MiB", 64 << 20, true}, {"1 GiB", 1 << 30, true}, {"2kb", 2000, true},
		{"512KiB", 512 << 10, true}, {"-1", 0, false}, {"lots", 0, false}, {"9999999999TiB", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v", tc.in, got, err)
		}
	}
	if FormatSize(64<<20) != "64MiB" || FormatSize(1000) != "1000" || FormatSize(0) != "0" {
		t.Error("FormatSize")
	}
}
