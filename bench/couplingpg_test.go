package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/pgserver"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// The experiment on a PostgreSQL server the nodes share: every arm gets
// its own copy of the seeded database, serves without errors, and the
// server's CPU is counted as the benchmark's and reported apart.
func TestCouplingPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters and a PostgreSQL server")
	}
	if _, err := pgserver.Bin("postgres"); err != nil {
		t.Skipf("needs PostgreSQL (.ci/run installs it): %v", err)
	}
	exp, err := ParseExperiment([]byte(strings.Replace(tinyExperiment, "sizes: [1, 2]", "sizes: [2]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := testContext(t, 8*time.Minute)
	defer cancel()
	res, err := Coupling(ctx, CouplingOptions{Experiment: exp, ExperimentFile: tinyExperiment, InProcess: true,
		LoadgenInProcess: true, Dir: t.TempDir(), Logger: testkit.Logger(t), Postgres: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Manifest.Database, "PostgreSQL 127.0.0.1:") || len(res.Runs) != 1 || len(res.Runs[0]) != 3 {
		t.Fatalf("database %q, %d runs", res.Manifest.Database, len(res.Runs))
	}
	for _, ar := range res.Runs[0] {
		st := ar.Stages[0]
		if ar.Error != "" || st.Total.Count == 0 || st.Total.Errors > 0 {
			t.Errorf("%s: error %q, %d operations, %d failed: %v", ar.Arm.Name(), ar.Error, st.Total.Count, st.Total.Errors, st.Errors)
		}
		if st.CPU.DBSeconds <= 0 || st.CPU.DBMsPerOp <= 0 {
			t.Errorf("%s: the database's CPU %+v", ar.Arm.Name(), st.CPU)
		}
	}
	out := t.TempDir()
	if err := WriteReport(out, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "| database | PostgreSQL 127.0.0.1:") || !strings.Contains(string(b), "database CPU ms/op") {
		t.Errorf("report without the database or its CPU:\n%s", b)
	}
}
