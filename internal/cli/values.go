package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The flag.Values that bind onto fields. Each writes straight to the
// field it was made from.
type (
	stringValue   string
	intValue      int
	int64Value    int64
	boolValue     bool
	durationValue time.Duration
	sizeValue     int64
	usizeValue    uint64
	listValue     []string
)

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Get() any           { return string(*v) }

func (v *intValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, strconv.IntSize)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v = intValue(n)
	return nil
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Get() any       { return int(*v) }

func (v *int64Value) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, 64)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v = int64Value(n)
	return nil
}
func (v *int64Value) String() string { return strconv.FormatInt(int64(*v), 10) }
func (v *int64Value) Get() any       { return int64(*v) }

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*v = boolValue(b)
	return nil
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) Get() any         { return bool(*v) }
func (v *boolValue) IsBoolFlag() bool { return true }

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration (want e.g. 500ms, 30s, 5m, 24h)", s)
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Get() any       { return time.Duration(*v) }

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// ParseSize reads a number of bytes written as a plain number or with a
// unit: 512KiB, 64MiB, 1GiB, 2TiB (powers of 1024), or KB, MB, GB, TB
// (powers of 1000).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(strings.ToLower(t), strings.ToLower(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (want e.g. 1048576, 512KiB, 64MiB or 1GiB)", s)
	}
	if n > 0 && mult > (1<<62)/n {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// FormatSize writes a number of bytes with the largest binary unit that
// divides it.
func FormatSize(v int64) string {
	for _, u := range byteUnits[:4] {
		if v != 0 && v%u.mult == 0 {
			return strconv.FormatInt(v/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10)
}

func (v *sizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err == nil {
		*v = sizeValue(n)
	}
	return err
}
func (v *sizeValue) String() string { return FormatSize(int64(*v)) }
func (v *sizeValue) Get() any       { return int64(*v) }

func (v *usizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err == nil {
		*v = usizeValue(n)
	}
	return err
}
func (v *usizeValue) String() string { return FormatSize(int64(*v)) }
func (v *usizeValue) Get() any       { return uint64(*v) }

// Set appends: a repeated flag adds to the list, and commas separate
// several values in one.
func (v *listValue) Set(s string) error {
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			*v = append(*v, e)
		}
	}
	return nil
}
func (v *listValue) String() string { return strings.Join(*v, ",") }
func (v *listValue) Get() any       { return []string(*v) }
