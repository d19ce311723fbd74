package scheduler

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// ScheduleKind says how a Schedule computes its fire times.
type ScheduleKind string

const (
	// KindCron fires at the times a cron expression matches, read in a
	// time zone.
	KindCron ScheduleKind = "cron"
	// KindInterval fires at First, First+Every, First+2·Every, ...
	KindInterval ScheduleKind = "interval"
	// KindOnce fires once, at At.
	KindOnce ScheduleKind = "once"
)

// Schedule is when a job fires. Build one with Cron, Every or Once; the
// zero value is invalid. It is plain data (stored with clustered jobs).
type Schedule struct {
	Kind ScheduleKind `msgpack:"k" json:"kind"`
	// Cron is a cron expression: five fields (minute hour day-of-month
	// month day-of-week), an optional leading seconds field, or a
	// descriptor such as @daily. TimeZone is an IANA name ("" is UTC).
	Cron     string `msgpack:"c,omitempty" json:"cron,omitempty"`
	TimeZone string `msgpack:"z,omitempty" json:"time_zone,omitempty"`
	// Every and First define an interval schedule.
	Every time.Duration `msgpack:"e,omitempty" json:"every,omitempty"`
	First time.Time     `msgpack:"f,omitempty" json:"first,omitempty"`
	// At is the time of a run-once schedule.
	At time.Time `msgpack:"a,omitempty" json:"at,omitempty"`
}

// Cron is a cron schedule read in the named IANA time zone ("" for UTC).
//
// Across daylight-saving changes: a wall time that does not exist (02:30
// on the spring-forward day in New York) is skipped, as in Quartz and
// robfig/cron; a wall time that happens twice (01:30 on the fall-back day)
// fires once, at its first occurrence, unless the hour field is "*", in
// which case the expression follows real time and fires in both hours (an
// hourly job stays hourly).
func Cron(expr, timeZone string) Schedule {
	return Schedule{Kind: KindCron, Cron: expr, TimeZone: timeZone}
}

// Every fires every d, first at first. Fire times that have passed when
// the job is scheduled are skipped: its first run is the first fire time
// at or after that moment.
func Every(d time.Duration, first time.Time) Schedule {
	return Schedule{Kind: KindInterval, Every: d, First: first}
}

// Once fires once at at (at once if at has passed when it is scheduled).
func Once(at time.Time) Schedule { return Schedule{Kind: KindOnce, At: at} }

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// compiled is a validated schedule ready to compute fire times.
type compiled struct {
	s    Schedule
	cron cron.Schedule
	loc  *time.Location
	// starHour: the cron hour field is "*" (see Cron on DST).
	starHour bool
}

func (s Schedule) compile() (compiled, error) {
	c := compiled{s: s}
	switch s.Kind {
	case KindCron:
		loc, err := time.LoadLocation(s.TimeZone)
		if err != nil {
			return c, fmt.Errorf("%w: time zone %q: %v", ErrInvalid, s.TimeZone, err)
		}
		sched, err := cronParser.Parse(s.Cron)
		if err != nil {
			return c, fmt.Errorf("%w: cron expression %q: %v", ErrInvalid, s.Cron, err)
		}
		if spec, ok := sched.(*cron.SpecSchedule); ok {
			spec.Location = loc
			c.starHour = spec.Hour&(1<<63) != 0 // robfig's starBit
		}
		c.cron, c.loc = sched, loc
	case KindInterval:
		if s.Every <= 0 {
			return c, fmt.Errorf("%w: interval %v must be positive", ErrInvalid, s.Every)
		}
		if s.First.IsZero() {
			return c, fmt.Errorf("%w: interval schedule without a first run time", ErrInvalid)
		}
	case KindOnce:
		if s.At.IsZero() {
			return c, fmt.Errorf("%w: run-once schedule without a time", ErrInvalid)
		}
	default:
		return c, fmt.Errorf("%w: schedule kind %q (want cron, interval or once)", ErrInvalid, s.Kind)
	}
	return c, nil
}

// Next returns the first fire time strictly after t, or false when the
// schedule has no more (a run-once schedule after its time, a cron
// expression that never matches within five years).
func (s Schedule) Next(t time.Time) (time.Time, bool) {
	c, err := s.compile()
	if err != nil {
		return time.Time{}, false
	}
	return c.next(t)
}

// minGap is the shortest time between consecutive fire times among the
// first n after now; ok is false for a schedule that fires at most once
// from now on.
func (c compiled) minGap(now time.Time, n int) (gap time.Duration, ok bool) {
	if c.s.Kind == KindInterval {
		return c.s.Every, true
	}
	prev, more := c.next(now)
	for i := 0; more && i < n; i++ {
		t, more2 := c.next(prev)
		if !more2 {
			break
		}
		if d := t.Sub(prev); !ok || d < gap {
			gap, ok = d, true
		}
		prev, more = t, more2
	}
	return gap, ok
}

func (c compiled) next(t time.Time) (time.Time, bool) {
	switch c.s.Kind {
	case KindInterval:
		if t.Before(c.s.First) {
			return c.s.First, true
		}
		k := t.Sub(c.s.First)/c.s.Every + 1
		return c.s.First.Add(k * c.s.Every), true
	case KindOnce:
		if t.Before(c.s.At) {
			return c.s.At, true
		}
		return time.Time{}, false
	}
	n := c.cron.Next(t)
	if n.IsZero() {
		return n, false
	}
	if !c.starHour && c.repeatedWallTime(n) {
		if n = c.cron.Next(n); n.IsZero() {
			return n, false
		}
	}
	return n.UTC(), true
}

// repeatedWallTime reports whether t is the second occurrence of its wall
// time (the fall-back hour): time.Date resolves an ambiguous wall time to
// its first occurrence.
func (c compiled) repeatedWallTime(t time.Time) bool {
	if c.loc == nil {
		return false
	}
	w := t.In(c.loc)
	first := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), c.loc)
	return !first.Equal(t)
}

// first is the first fire time of a schedule set at now: at or after now,
// except that a run-once time that has passed fires at once.
func (c compiled) first(now time.Time) (time.Time, bool) {
	if c.s.Kind == KindOnce {
		return c.s.At, true
	}
	return c.next(now.Add(-time.Nanosecond))
}

func (s Schedule) String() string {
	switch s.Kind {
	case KindCron:
		tz := s.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		return fmt.Sprintf("cron %q %s", s.Cron, tz)
	case KindInterval:
		return fmt.Sprintf("every %v from %s", s.Every, s.First.UTC().Format(time.RFC3339Nano))
	case KindOnce:
		return "once at " + s.At.UTC().Format(time.RFC3339Nano)
	}
	return "invalid schedule"
}

// scheduleJSON is Schedule in JSON, with the interval as a Go duration
// string ("90s").
type scheduleJSON struct {
	Kind     ScheduleKind `json:"kind"`
	Cron     string       `json:"cron,omitempty"`
	TimeZone string       `json:"time_zone,omitempty"`
	Every    string       `json:"every,omitempty"`
	First    time.Time    `json:"first,omitzero"`
	At       time.Time    `json:"at,omitzero"`
}

func (s Schedule) MarshalJSON() ([]byte, error) {
	j := scheduleJSON{Kind: s.Kind, Cron: s.Cron, TimeZone: s.TimeZone, First: s.First, At: s.At}
	if s.Every != 0 {
		j.Every = s.Every.String()
	}
	return json.Marshal(j)
}

func (s *Schedule) UnmarshalJSON(b []byte) error {
	var j scheduleJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Schedule{Kind: j.Kind, Cron: j.Cron, TimeZone: j.TimeZone, First: j.First, At: j.At}
	if j.Every != "" {
		d, err := time.ParseDuration(j.Every)
		if err != nil {
			return fmt.Errorf("schedule interval %q: %w", j.Every, err)
		}
		s.Every = d
	}
	return nil
}
