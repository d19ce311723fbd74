package resp

type subState struct{}

func (s *subState) count() int    { return 0 }
func (s *subState) channels() int { return 0 }
func (s *subState) patterns() int { return 0 }

type pubsub struct{ s *Server }

func newPubsub(s *Server) *pubsub { return &pubsub{s: s} }
func (p *pubsub) start() error    { return nil }
func (p *pubsub) close()          {}
func (p *pubsub) drop(c *conn)    {}
func (p *pubsub) clients() int    { return 0 }
func (p *pubsub) channels() int   { return 0 }
