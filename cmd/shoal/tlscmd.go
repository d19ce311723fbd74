package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// tlsSettings are those of 'shoal tls init' and 'shoal tls issue'.
type tlsSettings struct {
	dir      string
	validity time.Duration
	ips, dns []string
}

func init() {
	register(
		&command{name: "tls init", summary: "Create the cluster's certificate authority: DIR/ca.pem and DIR/ca-key.pem (0600, in a 0700 directory). " +
			"Keep ca-key.pem off the nodes if you can: it is needed only to issue certificates.",
			bind: func(s *cli.Set) runFunc {
				t := &tlsSettings{dir: "shoal-tls", validity: tlsutil.DefaultCAValidity}
				s.String(&t.dir, "dir", "the certificate directory")
				s.Duration(&t.validity, "valid", "how long the CA is valid")
				return func(_ context.Context, sio stdio, _ []string) error { return t.init(sio) }
			}},
		&command{name: "tls issue", args: "NAME", min: 1, max: 1,
			summary: "Issue the certificate of node NAME, signed by the CA in DIR: DIR/NAME.pem and DIR/NAME-key.pem (replacing earlier ones: " +
				"that is how a certificate is renewed; a running node reloads it). Give the node --tls-ca DIR/ca.pem --tls-cert DIR/NAME.pem --tls-key DIR/NAME-key.pem.",
			bind: func(s *cli.Set) runFunc {
				t := &tlsSettings{dir: "shoal-tls", validity: tlsutil.DefaultNodeValidity}
				s.String(&t.dir, "dir", "the certificate directory, with the CA")
				s.Duration(&t.validity, "valid", "how long the certificate is valid (at most as long as the CA)")
				s.List(&t.ips, "ip", "an IP address clients reach the node at, for HTTPS (repeatable)")
				s.List(&t.dns, "dns", "a host name clients reach the node at, for HTTPS (repeatable)")
				return func(_ context.Context, sio stdio, args []string) error { return t.issue(sio, args[0]) }
			}},
	)
}

func (t *tlsSettings) init(sio stdio) error {
	if t.validity <= 0 {
		return usagef("--valid %v: want a positive duration", t.validity)
	}
	if err := tlsutil.InitCA(t.dir, tlsutil.CAOptions{Validity: t.validity}); err != nil {
		return err
	}
	fmt.Fprintf(sio.out, "created the CA: %s and %s\nissue node certificates with: %s tls issue NAME --dir %s\n",
		filepath.Join(t.dir, tlsutil.CAFile), filepath.Join(t.dir, tlsutil.CAKeyFile), selfName(), t.dir)
	return nil
}

func (t *tlsSettings) issue(sio stdio, name string) error {
	if t.validity <= 0 {
		return usagef("--valid %v: want a positive duration", t.validity)
	}
	if err := tlsutil.CheckName(name); err != nil {
		return usagef("%v", err)
	}
	o := tlsutil.IssueOptions{Validity: t.validity, DNS: t.dns}
	for _, s := range t.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usagef("--ip %q: want an IP address", s)
		}
		o.IPs = append(o.IPs, ip)
	}
	cert, err := tlsutil.Issue(t.dir, name, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(sio.out, "issued %s (valid until %s): %s and %s\nrun the node with: --name %s --tls-ca %s --tls-cert %s --tls-key %s\n",
		name, cert.NotAfter.Format(time.RFC3339), filepath.Join(t.dir, tlsutil.CertFile(name)), filepath.Join(t.dir, tlsutil.KeyFile(name)),
		name, filepath.Join(t.dir, tlsutil.CAFile), filepath.Join(t.dir, tlsutil.CertFile(name)), filepath.Join(t.dir, tlsutil.KeyFile(name)))
	return nil
}
