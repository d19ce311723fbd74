package resp

import "github.com/shoal-dev/shoal/dmap"

// trackState is a connection's client-side caching state.
type trackState struct{}

func (t *trackState) on() bool                        { return false }
func (t *trackState) off(c *conn)                     {}
func (t *trackState) beginReads(c *conn)              {}
func (t *trackState) endReads(c *conn, keys []string) {}
func (t *trackState) getRedir() int64                 { return -1 }
func (t *trackState) command(c *conn, a [][]byte) {
	c.o.err("ERR CLIENT TRACKING is not available in this version of shoal")
}
func (t *trackState) caching(c *conn, v []byte) {
	c.o.err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
}
func (t *trackState) info(c *conn) {
	c.o.mapHeader(3)
	c.o.bulkString("flags")
	c.o.setHeader(1)
	c.o.bulkString("off")
	c.o.bulkString("redirect")
	c.o.int(-1)
	c.o.bulkString("prefixes")
	c.o.array(0)
}

// readOptions are the map options of a data command's reads.
func (c *conn) readOptions(spec *command) dmap.DoOptions { return dmap.DoOptions{} }

type tracker struct{ s *Server }

func newTracker(s *Server) *tracker                { return &tracker{s: s} }
func (t *tracker) invalidate(p int, keys []string) {}
func (t *tracker) drop(c *conn)                    {}
func (t *tracker) clients() int                    { return 0 }
func (t *tracker) keys() int                       { return 0 }
