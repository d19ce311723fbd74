package logfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRotatesBySizeAndKeepsBackups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "node.log")
	var opened []string
	l, err := Open(Config{Path: path, MaxSize: 100, MaxBackups: 2, OnOpen: func(f *os.File) error {
		opened = append(opened, f.Name())
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	line := func(i int) string { return fmt.Sprintf("line %03d %s\n", i, strings.Repeat("x", 36)) } // 46 bytes
	for i := 0; i < 10; i++ {
		if n, err := l.Write([]byte(line(i))); err != nil || n != 46 {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	// Two lines per file: 0-1, 2-3, 4-5, 6-7 (dropped), 8-9.
	want := map[string]string{path: line(8) + line(9), path + ".1": line(6) + line(7), path + ".2": line(4) + line(5)}
	for p, w := range want {
		if got := read(t, p); got != w {
			t.Errorf("%s = %q, want %q", p, got, w)
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists (%v): MaxBackups is 2", path, err)
	}
	if len(opened) != 5 {
		t.Errorf("OnOpen called %d times, want 5 (open and 4 rotations)", len(opened))
	}
}

func TestAppendsToAnExistingFileAndCountsItsSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.log")
	if err := os.WriteFile(path, bytes.Repeat([]byte("a"), 90), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Open(Config{Path: path, MaxSize: 100, MaxBackups: 1})
	if err != nil {
		t.Fatal(err)
	}
	l.Write([]byte("12345\n")) // 96: fits
	l.Write([]byte("67890\n")) // 102: rotates first
	l.Close()
	if got := read(t, path+".1"); got != strings.Repeat("a", 90)+"12345\n" {
		t.Errorf("backup = %q", got)
	}
	if got := read(t, path); got != "67890\n" {
		t.Errorf("current = %q", got)
	}
}

func TestOversizedWriteGetsAFileOfItsOwn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.log")
	l, err := Open(Config{Path: path, MaxSize: 10, MaxBackups: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write([]byte("ab\n"))
	big := strings.Repeat("z", 25) + "\n"
	if n, err := l.Write([]byte(big)); err != nil || n != len(big) {
		t.Fatalf("big write: %d %v", n, err)
	}
	l.Write([]byte("cd\n"))
	if a, b, c := read(t, path+".2"), read(t, path+".1"), read(t, path); a != "ab\n" || b != big || c != "cd\n" {
		t.Fatalf("files: %q %q %q", a, b, c)
	}
}

func TestNoBackupsTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.log")
	l, err := Open(Config{Path: path, MaxSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write([]byte("1234567\n"))
	l.Write([]byte("abc\n"))
	if got := read(t, path); got != "abc\n" {
		t.Fatalf("got %q", got)
	}
	if matches, _ := filepath.Glob(path + ".*"); len(matches) != 0 {
		t.Fatalf("backups %v with MaxBackups 0", matches)
	}
}

func TestConcurrentWritesKeepLinesWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.log")
	l, err := Open(Config{Path: path, MaxSize: 1000, MaxBackups: 100})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				fmt.Fprintf(l, "g%d line %04d\n", g, i)
			}
		}()
	}
	wg.Wait()
	l.Close()
	files, _ := filepath.Glob(path + "*")
	lines := 0
	for _, f := range files {
		b := read(t, f)
		if len(b) > 1000 {
			t.Errorf("%s has %d bytes, more than MaxSize", f, len(b))
		}
		for _, ln := range strings.Split(strings.TrimSuffix(b, "\n"), "\n") {
			if len(ln) != len("g0 line 0000") {
				t.Fatalf("%s: torn line %q", f, ln)
			}
			lines++
		}
	}
	if lines != 800 {
		t.Fatalf("%d lines in %d files, want 800", lines, len(files))
	}
}

func TestBadConfigAndClose(t *testing.T) {
	if _, err := Open(Config{}); err == nil {
		t.Error("empty path accepted")
	}
	if _, err := Open(Config{Path: filepath.Join(t.TempDir(), "x"), MaxSize: -1}); err == nil {
		t.Error("negative size accepted")
	}
	dir := t.TempDir()
	if _, err := Open(Config{Path: dir}); err == nil {
		t.Error("a directory accepted as the log file")
	}
	l, err := Open(Config{Path: filepath.Join(dir, "x.log")})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Write([]byte("late\n")); err != ErrClosed {
		t.Fatalf("write after Close: %v", err)
	}
}
