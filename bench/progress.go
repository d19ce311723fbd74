package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows how far a coupling run is, in seconds of stage time out
// of the run's most: every stage's warm-up and duration, each as many
// times as the quiet guard may run it. A stage that needs fewer attempts
// skips the rest, so the figure only grows. On a terminal it is a bar
// redrawn in place; anywhere else (a file, a pipe) one plain line per
// step, with no carriage returns. A nil *progress shows nothing.
type progress struct {
	w     io.Writer
	tty   bool
	pb    *progressbar.ProgressBar // on a terminal
	per   time.Duration            // one attempt at a stage
	total time.Duration

	mu   sync.Mutex
	done time.Duration
	desc string
}

func newProgress(o CouplingOptions) *progress {
	if o.Progress == nil {
		return nil
	}
	e := o.Experiment
	per := e.Stages.Warmup.D() + e.Stages.Duration.D()
	attempts := 1
	if e.Quiet.MaxOtherCPU > 0 {
		attempts += e.Quiet.Retries
	}
	b := &progress{w: o.Progress, tty: isTerminal(o.Progress), per: per,
		total: time.Duration(o.Repeat*len(e.Arms())*len(e.Stages.Clients)*attempts) * per}
	if sw := e.Switch; sw != nil {
		b.total += time.Duration(o.Repeat) * (sw.Warmup.D() + sw.Window())
	}
	if o.WarmupArm {
		b.total += time.Duration(attempts) * per // one stage
	}
	if b.tty {
		b.pb = progressbar.NewOptions64(int64(b.total/time.Second), progressbar.OptionSetWriter(o.Progress),
			progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true), progressbar.OptionShowCount(),
			progressbar.OptionSetItsString("s"), progressbar.OptionSetWidth(24), progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionShowDescriptionAtLineEnd())
	}
	return b
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// describe names the step under way: the bar's caption, or a line.
func (b *progress) describe(s string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.desc = s
	if b.tty {
		b.pb.Describe(s)
		return
	}
	fmt.Fprintf(b.w, "[%3d%%] %s\n", b.percent(b.done), s)
}

// step is the step under way, for messages.
func (b *progress) step() string {
	if b == nil {
		return "stage"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.desc
}

// percent is done's share of the total, 0 to 100. Callers hold mu.
func (b *progress) percent(done time.Duration) int {
	if b.total <= 0 {
		return 100
	}
	return int(min(100, 100*done/b.total))
}

// set moves the bar to done (never back). Callers hold mu.
func (b *progress) set(done time.Duration) {
	if b.tty {
		b.pb.Set64(int64(done / time.Second))
	}
}

// runStage advances the bar during an attempt at a stage of length d,
// from a goroutine that the returned stop ends (and waits for).
func (b *progress) runStage(d time.Duration) (stop func()) {
	if b == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		if !b.tty {
			return // lines are written at steps only
		}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				b.mu.Lock()
				b.set(b.done + min(time.Since(start), d))
				b.mu.Unlock()
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
		b.advance(d)
	}
}

// skipAttempts counts n attempts at a stage that were not needed as done.
func (b *progress) skipAttempts(n int) {
	if b != nil && n > 0 {
		b.advance(time.Duration(n) * b.per)
	}
}

func (b *progress) advance(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = min(b.done+d, b.total)
	b.set(b.done)
}

// above runs write (which prints whole lines) with the bar out of the
// way: cleared first on a terminal, redrawn after.
func (b *progress) above(write func()) {
	if b == nil || !b.tty {
		write()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pb.Clear()
	write()
	b.pb.RenderBlank()
	b.set(b.done)
}

func (b *progress) finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty {
		b.pb.Exit()
		fmt.Fprintln(b.w)
		return
	}
	end := "finished"
	if b.done < b.total {
		end = "stopped"
	}
	fmt.Fprintf(b.w, "[%3d%%] %s\n", b.percent(b.done), end)
}
