package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/pcstls"
)

// certCmd makes a test CA and certificates for mutual TLS. Production deployments usually
// bring their own PKI; any CA works as long as every certificate has both the serverAuth and
// clientAuth usages and names the addresses it is dialled at.
func certCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "Make a CA and certificates for mutual TLS (tests, small deployments)"}
	var dir string
	var validity time.Duration
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Make a CA: DIR/ca.crt (give it to every process as --tls-ca) and DIR/ca.key (keep it safe)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := pcstls.NewCA("pcs CA", validity)
			if err != nil {
				return err
			}
			if err := c.WriteCA(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/ca.crt and %s/ca.key (valid until %s)\n", dir, dir, c.Cert.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	var hosts []string
	issue := &cobra.Command{
		Use:   "issue NAME",
		Short: "Issue DIR/NAME.crt and DIR/NAME.key, signed by DIR/ca.*, for a PCS member, data node or client",
		Long: `issue makes a certificate with common name NAME, usable as a server and as a client
certificate, naming --hosts (IP addresses, DNS names or URIs) as subject alternative names: a
PCS member's or data node's certificate must name the addresses others dial it at. The allowed
identity lists (--tls-allowed-peers, -nodes, -clients) match NAME or any of the hosts.

  pcsctl cert ca --dir certs
  pcsctl cert issue pcs-1 --dir certs --hosts 10.0.0.1,pcs-1.example.com
  pcsctl cert issue node-1 --dir certs --hosts 10.0.1.1
  pcsctl cert issue admin --dir certs`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := pcstls.LoadCA(dir)
			if err != nil {
				return err
			}
			is, err := c.Issue(args[0], hosts, validity)
			if err != nil {
				return err
			}
			f, err := is.Write(dir, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s: --tls-ca %s --tls-cert %s --tls-key %s\n", f.Cert, f.Key, f.CA, f.Cert, f.Key)
			return nil
		},
	}
	for _, c := range []*cobra.Command{ca, issue} {
		c.Flags().StringVar(&dir, "dir", "certs", "directory of the CA and the certificates")
		c.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificate is valid")
	}
	issue.Flags().StringSliceVar(&hosts, "hosts", []string{"127.0.0.1", "localhost", "::1"}, "IP addresses and DNS names the certificate names")
	cmd.AddCommand(ca, issue)
	return cmd
}
