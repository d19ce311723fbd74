package cli

import (
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// maxConfigFile bounds a configuration file: it holds settings, not data.
const maxConfigFile = 1 << 20

// parseFile sets the flags still at their defaults from the YAML mapping
// in path. A key that is no flag of this Set is ignored when known says
// another command has it, and refused otherwise (a misspelt setting must
// not pass silently).
func (s *Set) parseFile(path string, known func(string) bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return s.usageErr("--config: %v", err)
	}
	if len(b) > maxConfigFile {
		return s.usageErr("--config %s: larger than %d bytes", path, maxConfigFile)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return s.usageErr("--config %s: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return s.usageErr("--config %s:%d: want a mapping of setting names to values", path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if err := s.setFromFile(path, root.Content[i], root.Content[i+1], known); err != nil {
			return err
		}
	}
	return nil
}

func (s *Set) setFromFile(path string, key, val *yaml.Node, known func(string) bool) error {
	where := fmt.Sprintf("%s:%d", path, key.Line)
	f := s.byName[key.Value]
	switch {
	case key.Value == ConfigFlag:
		return s.usageErr("%s: %q cannot be set in a configuration file", where, key.Value)
	case f == nil && known != nil && known(key.Value):
		return nil
	case f == nil:
		return s.usageErr("%s: unknown setting %q", where, key.Value)
	case f.local:
		return s.usageErr("%s: %q can only be given on the command line", where, key.Value)
	case f.Source != FromDefault:
		return nil // the command line or the environment gave it
	}
	var values []string
	switch {
	case val.Kind == yaml.ScalarNode && val.Tag != "!!null":
		values = []string{val.Value}
	case val.Kind == yaml.SequenceNode && f.list:
		for _, e := range val.Content {
			if e.Kind != yaml.ScalarNode {
				return s.usageErr("%s: %s: want a list of values", where, key.Value)
			}
			values = append(values, e.Value)
		}
	default:
		return s.usageErr("%s: %s: want a single value", where, key.Value)
	}
	for _, v := range values {
		if err := f.value.Set(v); err != nil {
			return s.usageErr("%s: %s: %v", where, key.Value, err)
		}
	}
	f.Source, f.Origin = FromFile, where
	return nil
}
