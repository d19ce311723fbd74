// Package cli reads a command's settings from three places and binds them
// straight onto the fields of its configuration: the command line first,
// then the environment (SHOAL_ and the flag's name in capitals, - as _),
// then a YAML file named by --config whose keys are the flags' names. The
// first place that gives a setting wins; a setting given nowhere keeps
// the value its field had when it was bound, which is therefore its
// default. Every Set records where each value came from (PrintConfig) and
// writes its help from the same definitions (Help, Markdown), so neither
// can disagree with what is parsed.
//
// It is a thin layer over the standard flag package: the flag syntax is
// flag's (-name or --name, -name=value or -name value, booleans as
// -name or -name=false), flags may come before, between or after the
// positional arguments, and "--" ends them.
//
// Why not a library. The settings live in the packages' Config structs,
// which must not learn about command lines (no struct tags, no
// registration), so a tag-driven parser (kong, go-arg) is out; cobra and
// viper bring a dozen modules, pflag's syntax and viper's
// case-insensitive keys for what is a few hundred lines here; ff (flags,
// then environment, then file, the same order) comes closest but does not
// say where a value came from, does not take flags after positional
// arguments, and would still need the binding helpers, the byte sizes and
// the mapping of a Config's errors to flags. flag.Value is the seam that
// binds straight onto a field, and the YAML reader is already a
// dependency.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
)

// EnvPrefix starts every environment variable a Set reads.
const EnvPrefix = "SHOAL_"

// ConfigFlag is the flag that names the configuration file; every Set
// has it.
const ConfigFlag = "config"

// Where a value came from.
const (
	FromDefault = "default"
	FromFlag    = "flag"
	FromEnv     = "env"
	FromFile    = "file"
	FromDerived = "derived"
)

// Flag is one setting of a Set.
type Flag struct {
	Name  string
	Usage string
	// Type names the value in the help ("string", "duration", "size");
	// empty for booleans.
	Type string
	// Default is the value's text when it was bound; DefaultDoc, if set,
	// says it in words for documents read on other machines ("1.5 ×
	// cores" where Default is this machine's number).
	Default, DefaultDoc string
	// Source is where the value came from (FromDefault, FromFlag, ...)
	// and Origin says more: the variable or the file and line.
	Source, Origin string

	value  flag.Value
	field  any  // the bound field's address
	local  bool // command line only
	list   bool // repeatable; comma-separated in the environment
	parsed string
}

// Local makes the flag a command-line-only one: never read from the
// environment or a file (a secret of someone else, such as a new user's
// password, must not be picked up from an administrator's environment).
func (f *Flag) Local() *Flag { f.local = true; return f }

// Doc sets DefaultDoc.
func (f *Flag) Doc(defaultDoc string) *Flag { f.DefaultDoc = defaultDoc; return f }

// CommandLineOnly reports whether Local was called.
func (f *Flag) CommandLineOnly() bool { return f.local }

// Value is the flag's current value as text.
func (f *Flag) Value() string { return f.value.String() }

// UsageError is a mistake in a command's settings or arguments: the
// command should exit with status 2.
type UsageError struct {
	Cmd string // the command, "node" or "kv get"
	Msg string
}

func (e *UsageError) Error() string { return e.Msg }

// Set is a command's settings.
type Set struct {
	// Cmd is the command's name after "shoal" ("node", "kv get"), Args the
	// positional arguments' synopsis, Summary a line on what it does.
	Cmd, Args, Summary string
	// Notes, if set, follows the flags in the help.
	Notes string

	fs     *flag.FlagSet
	flags  []*Flag
	byName map[string]*Flag
	config string
}

// New returns an empty Set with its --config flag.
func New(cmd, args, summary string) *Set {
	s := &Set{Cmd: cmd, Args: args, Summary: summary, fs: flag.NewFlagSet(cmd, flag.ContinueOnError), byName: map[string]*Flag{}}
	s.fs.SetOutput(io.Discard)
	s.fs.Usage = func() {}
	s.String(&s.config, ConfigFlag, "read settings not given as flags or in the environment from this YAML file (keys: the flags' names)")
	return s
}

// Flags are the Set's flags in the order they were bound.
func (s *Set) Flags() []*Flag { return s.flags }

// Lookup is the flag of that name, or nil.
func (s *Set) Lookup(name string) *Flag { return s.byName[name] }

// Var binds v, which must write to the field at address field, under
// name. The field's current value is the default.
func (s *Set) Var(v flag.Value, field any, name, typ, usage string) *Flag {
	if s.byName[name] != nil {
		panic("cli: flag " + name + " bound twice in " + s.Cmd) // a programming error, found by every test
	}
	f := &Flag{Name: name, Usage: usage, Type: typ, Default: v.String(), Source: FromDefault, value: v, field: field}
	s.fs.Var(v, name, usage)
	s.flags = append(s.flags, f)
	s.byName[name] = f
	return f
}

// String binds a string field.
func (s *Set) String(p *string, name, usage string) *Flag {
	return s.Var((*stringValue)(p), p, name, "string", usage)
}

// Int binds an int field.
func (s *Set) Int(p *int, name, usage string) *Flag {
	return s.Var((*intValue)(p), p, name, "int", usage)
}

// Int64 binds an int64 field.
func (s *Set) Int64(p *int64, name, usage string) *Flag {
	return s.Var((*int64Value)(p), p, name, "int", usage)
}

// Bool binds a bool field.
func (s *Set) Bool(p *bool, name, usage string) *Flag {
	return s.Var((*boolValue)(p), p, name, "", usage)
}

// Duration binds a time.Duration field ("500ms", "2m").
func (s *Set) Duration(p *time.Duration, name, usage string) *Flag {
	return s.Var((*durationValue)(p), p, name, "duration", usage)
}

// Size binds an int64 field holding bytes: a number, or one with a unit
// (64MiB, 1GiB, 512KiB; KB, MB, GB in powers of 1000).
func (s *Set) Size(p *int64, name, usage string) *Flag {
	return s.Var((*sizeValue)(p), p, name, "size", usage)
}

// USize binds a uint64 field holding bytes, as Size.
func (s *Set) USize(p *uint64, name, usage string) *Flag {
	return s.Var((*usizeValue)(p), p, name, "size", usage)
}

// List binds a []string field: the flag may be repeated, the environment
// and a single flag take comma-separated lists, the file a YAML sequence.
func (s *Set) List(p *[]string, name, usage string) *Flag {
	f := s.Var((*listValue)(p), p, name, "list", usage)
	f.list = true
	return f
}

// Env looks up an environment variable; os.LookupEnv is one.
type Env func(name string) (string, bool)

// Options are what Parse needs besides the arguments.
type Options struct {
	// Env is the environment (default os.LookupEnv).
	Env Env
	// Known reports whether some other command has a flag of that name:
	// a configuration file shared by several commands may hold it, and
	// this command ignores it. Nil: every key must be this Set's.
	Known func(name string) bool
}

// EnvName is the environment variable of a flag.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Parse reads the command line, then the environment for the flags it
// did not set, then the configuration file for those still unset, and
// returns the positional arguments. -h or --help returns flag.ErrHelp;
// any mistake is a *UsageError saying where the bad value came from.
func (s *Set) Parse(args []string, o Options) ([]string, error) {
	if o.Env == nil {
		o.Env = os.LookupEnv
	}
	pos, err := s.parseArgs(args)
	if err != nil {
		return nil, err
	}
	if err := s.parseEnv(o.Env); err != nil {
		return nil, err
	}
	if s.config != "" {
		if err := s.parseFile(s.config, o.Known); err != nil {
			return nil, err
		}
	}
	for _, f := range s.flags {
		f.parsed = f.value.String()
	}
	return pos, nil
}

// parseArgs parses flags anywhere among the arguments; those after "--"
// are all positional.
func (s *Set) parseArgs(args []string) ([]string, error) {
	var pos, rest []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	for {
		if err := s.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, s.usageErr("%s", flagMessage(err))
		}
		if s.fs.NArg() == 0 {
			break
		}
		pos = append(pos, s.fs.Arg(0))
		args = s.fs.Args()[1:]
	}
	s.fs.Visit(func(fl *flag.Flag) {
		f := s.byName[fl.Name]
		f.Source, f.Origin = FromFlag, "--"+fl.Name
	})
	return append(pos, rest...), nil
}

func (s *Set) parseEnv(env Env) error {
	for _, f := range s.flags {
		if f.Source != FromDefault || f.local {
			continue
		}
		name := EnvName(f.Name)
		v, ok := env(name)
		if !ok || v == "" { // an empty variable is an unset one
			continue
		}
		if err := f.value.Set(v); err != nil {
			return s.usageErr("$%s=%q: %v", name, v, err)
		}
		f.Source, f.Origin = FromEnv, "$"+name
	}
	return nil
}

// invalidValue is how the flag package reports a value its flag.Value
// refused.
var invalidValue = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for flag -([^:]+): (.*)$`)

// flagMessage rewrites the flag package's error in the words of the
// other messages: `--name "value": what was wrong`.
func flagMessage(err error) string {
	m := invalidValue.FindStringSubmatch(err.Error())
	if m == nil {
		return strings.Replace(err.Error(), " -", " --", 1)
	}
	return fmt.Sprintf("--%s %q: %s", m[2], m[1], m[3])
}

func (s *Set) usageErr(format string, args ...any) error {
	return &UsageError{Cmd: s.Cmd, Msg: fmt.Sprintf(format, args...)}
}

// FlagFor is the flag bound to the field at path (as a *config.FieldError
// names it: "Store.MaxVoters") inside the struct root points to, or nil.
func (s *Set) FlagFor(root any, path string) *Flag {
	v := reflect.ValueOf(root)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	v = v.Elem()
	for _, name := range strings.Split(path, ".") {
		for v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return nil
		}
		if v = v.FieldByName(name); !v.IsValid() {
			return nil
		}
	}
	addr := v.Addr().Pointer()
	for _, f := range s.flags {
		if reflect.ValueOf(f.field).Pointer() == addr && reflect.TypeOf(f.field).Elem() == v.Type() {
			return f
		}
	}
	return nil
}

// Explain turns a configuration's *config.FieldError about a field of
// root that a flag is bound to into a *UsageError naming the flag:
// "--voters 4: want 1, 3, 5 or 7". Other errors pass unchanged.
func (s *Set) Explain(root any, err error) error {
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	f := s.FlagFor(root, fe.Field)
	if f == nil {
		return err
	}
	return s.usageErr("--%s %s: want %s", f.Name, config.Quote(fe.Value), fe.Want)
}
