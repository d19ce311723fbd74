package resp

import (
	"slices"
	"strings"
)

func cmdCommand(c *conn, a [][]byte) {
	if len(a) == 1 {
		names := sortedNames()
		c.o.array(len(names))
		for _, n := range names {
			commandInfo(c, commands[n])
		}
		return
	}
	switch upper(a[1]) {
	case "COUNT":
		c.o.int(int64(len(commands)))
	case "LIST":
		c.o.strings(sortedNames())
	case "INFO":
		names := a[2:]
		if len(names) == 0 {
			all := sortedNames()
			c.o.array(len(all))
			for _, n := range all {
				commandInfo(c, commands[n])
			}
			return
		}
		c.o.array(len(names))
		for _, n := range names {
			if cmd := lookup(n); cmd != nil {
				commandInfo(c, cmd)
			} else {
				c.o.nullArray()
			}
		}
	case "DOCS":
		var cmds []*command
		if len(a) == 2 {
			for _, n := range sortedNames() {
				cmds = append(cmds, commands[n])
			}
		} else {
			for _, n := range a[2:] {
				if cmd := lookup(n); cmd != nil {
					cmds = append(cmds, cmd)
				}
			}
		}
		c.o.mapHeader(len(cmds))
		for _, cmd := range cmds {
			c.o.bulkString(cmd.name)
			c.o.mapHeader(3)
			c.o.bulkString("summary")
			c.o.bulkString(cmd.summary)
			c.o.bulkString("since")
			c.o.bulkString(cmd.since)
			c.o.bulkString("group")
			c.o.bulkString(cmd.group)
		}
	case "GETKEYS":
		if len(a) < 3 {
			c.o.err("ERR wrong number of arguments for 'command|getkeys' command")
			return
		}
		cmd := lookup(a[2])
		switch {
		case cmd == nil:
			c.o.err("ERR Invalid command specified")
		case !cmd.arityOK(len(a) - 2):
			c.o.err("ERR Invalid number of arguments specified for command")
		default:
			keys := cmd.keys(a[2:])
			if len(keys) == 0 {
				c.o.err("ERR The command has no key arguments")
				return
			}
			c.o.array(len(keys))
			for _, k := range keys {
				c.o.bulk(k)
			}
		}
	case "HELP":
		c.o.strings([]string{"COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"(no subcommand)", "    Return details about all Redis commands.",
			"COUNT", "    Return the total number of commands in this Redis server.",
			"LIST", "    Return a list of all commands in this Redis server.",
			"INFO [<command-name> ...]", "    Return details about multiple Redis commands.",
			"DOCS [<command-name> ...]", "    Return documentation details about multiple Redis commands.",
			"GETKEYS <full-command>", "    Return the keys from a full Redis command.",
			"HELP", "    Print this help."})
	default:
		c.o.err(unknownSub(a, "COMMAND"))
	}
}

func sortedNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// commandInfo writes a command's COMMAND INFO entry, in Redis 7's shape:
// name, arity, flags, first key, last key, step, ACL categories, tips,
// key specifications, subcommands.
func commandInfo(c *conn, cmd *command) {
	c.o.array(10)
	c.o.bulkString(cmd.name)
	c.o.int(int64(cmd.arity))
	var flags []string
	for _, f := range flagNames {
		if cmd.flags&f.f != 0 {
			flags = append(flags, f.name)
		}
	}
	c.o.setHeader(len(flags))
	for _, f := range flags {
		c.o.simple(f)
	}
	c.o.int(int64(cmd.firstKey))
	c.o.int(int64(cmd.lastKey))
	c.o.int(int64(cmd.step))
	cats := []string{"@" + strings.ReplaceAll(cmd.group, "generic", "keyspace")}
	switch {
	case cmd.flags&flagWrite != 0:
		cats = append(cats, "@write")
	case cmd.flags&flagRead != 0:
		cats = append(cats, "@read")
	}
	if cmd.flags&flagFast != 0 {
		cats = append(cats, "@fast")
	} else {
		cats = append(cats, "@slow")
	}
	c.o.setHeader(len(cats))
	for _, cat := range cats {
		c.o.simple(cat)
	}
	c.o.array(0)
	c.o.array(0)
	c.o.array(0)
}
