package cli

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Synopsis is the usage line: "shoal kv get [flags] KEY".
func (s *Set) Synopsis() string {
	line := "shoal " + s.Cmd + " [flags]"
	if s.Args != "" {
		line += " " + s.Args
	}
	return line
}

// Help writes the command's usage, summary and flags.
func (s *Set) Help(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n", s.Synopsis())
	if s.Summary != "" {
		fmt.Fprintf(w, "\n%s\n", s.Summary)
	}
	fmt.Fprintf(w, "\nflags (each also from $%s<NAME> in capitals with _ for -, or NAME: in the --config file):\n", EnvPrefix)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range s.flags {
		name := "-" + f.Name
		if len(f.Name) > 1 {
			name = "-" + name
		}
		if f.Type != "" {
			name += " " + f.Type
		}
		fmt.Fprintf(tw, "  %s\t%s%s\n", name, f.Usage, f.defaultNote())
	}
	tw.Flush()
	if s.Notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(s.Notes, "\n"))
	}
}

// defaultNote is " (default X)", from the default's value unless it is
// the zero value, and from DefaultDoc.
func (f *Flag) defaultNote() string {
	var parts []string
	switch f.Default {
	case "", "0", "false", "0s":
	default:
		d := f.Default
		if f.Type == "string" {
			d = strconv.Quote(d)
		}
		parts = append(parts, d)
	}
	if f.DefaultDoc != "" {
		parts = append(parts, strings.ReplaceAll(f.DefaultDoc, "`", ""))
	}
	var note string
	if len(parts) > 0 {
		note = " (default " + strings.Join(parts, ": ") + ")"
	}
	if f.local {
		note += " (command line only)"
	}
	return note
}

// Markdown writes the flags as a Markdown table: flag, default, meaning.
func (s *Set) Markdown(w io.Writer) {
	fmt.Fprintln(w, "| flag | default | meaning |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, f := range s.flags {
		d := f.DefaultDoc
		if d == "" && f.Default != "" {
			d = "`" + f.Default + "`"
		}
		fmt.Fprintf(w, "| `--%s` | %s | %s |\n", f.Name, d, strings.ReplaceAll(f.Usage, "|", `\|`))
	}
}

// PrintConfig writes the effective value of every flag but --config as
// YAML that --config reads back, each with a comment saying where it came
// from: default, flag, env, file, or derived (filled from other settings
// after parsing).
func (s *Set) PrintConfig(w io.Writer) {
	fmt.Fprintf(w, "# shoal %s: the effective configuration; each comment says where the value came from\n", s.Cmd)
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, f := range s.flags {
		if f.Name == ConfigFlag || f.local {
			continue
		}
		src := f.Source
		if f.Origin != "" {
			src += " " + f.Origin
		}
		if cur := f.value.String(); cur != f.parsed {
			if f.Source == FromDefault {
				src = FromDerived
			} else {
				src = FromDerived + " from " + strconv.Quote(f.parsed) + ", " + src
			}
		}
		fmt.Fprintf(tw, "%s: %s\t# %s\n", f.Name, yamlValue(f.value), src)
	}
	tw.Flush()
}

// yamlValue writes a value as a YAML scalar or flow sequence.
func yamlValue(v flag.Value) string {
	switch x := v.(type) {
	case *boolValue, *intValue, *int64Value:
		return v.String()
	case *listValue:
		q := make([]string, len(*x))
		for i, e := range *x {
			q[i] = strconv.Quote(e)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return strconv.Quote(v.String())
}
