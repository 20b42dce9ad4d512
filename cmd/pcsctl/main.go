// Command pcsctl is the operator's CLI for PCS: status, membership, the system key-value
// namespace, timestamps, ids and log levels. It is a thin layer over the Go client.
//
// Exit codes: 0 on success; 1 with a one-line error on stderr otherwise.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/postdb/pcs/version"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/pcstls"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pcsctl:", oneLine(err)+tlsHint(err))
		os.Exit(1)
	}
}

// tlsHint explains the errors of a plaintext client at a TLS port and the reverse, which
// gRPC reports only as a reset connection or a bad record.
func tlsHint(err error) string {
	switch msg := err.Error(); {
	case strings.Contains(msg, "server preface") || strings.Contains(msg, "connection reset by peer") || strings.Contains(msg, "broken pipe"):
		return " (if the cluster runs mutual TLS, give --tls-ca, --tls-cert and --tls-key or $PCS_TLS_CA, $PCS_TLS_CERT, $PCS_TLS_KEY)"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return " (the server speaks plaintext: drop --tls-ca, --tls-cert and --tls-key)"
	}
	return ""
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// globals are the flags every command shares.
type globals struct {
	endpoints []string
	output    string
	timeout   time.Duration
	tls       pcstls.Files
	// pcsNames, nodeNames: the identities accepted from PCS members and data nodes under TLS.
	pcsNames, nodeNames []string
}

func (g *globals) client() (*client.Client, error) { return g.newClient() }

// newClient returns a client of the --endpoints with the TLS identity of the --tls-* flags.
func (g *globals) newClient(opts ...client.Option) (*client.Client, error) {
	if g.tls.Enabled() {
		src, err := pcstls.NewSource(g.tls)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(src), client.WithServerNames(g.pcsNames, g.nodeNames))
	}
	return client.New(g.endpoints, opts...)
}

func (g *globals) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), g.timeout)
}

// open returns a client and the command's deadline; done releases both.
func (g *globals) open(cmd *cobra.Command) (*client.Client, context.Context, func(), error) {
	c, err := g.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.ctx(cmd)
	return c, ctx, func() { cancel(); c.Close() }, nil
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "pcsctl",
		Version:       version.Get().String(),
		Short:         "Operate a PCS cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("-o %q: want table or json", g.output)
			}
			if len(g.endpoints) == 0 {
				return fmt.Errorf("--endpoints: at least one address is required")
			}
			if err := g.tls.Validate(); err != nil {
				return fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	defaultEndpoints := []string{"127.0.0.1:3379"}
	if env := os.Getenv("PCS_ENDPOINTS"); env != "" {
		defaultEndpoints = strings.Split(env, ",")
	}
	pf.StringSliceVar(&g.endpoints, "endpoints", defaultEndpoints, "PCS client addresses, comma-separated (default from $PCS_ENDPOINTS)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "deadline of the whole command")
	pf.StringVar(&g.tls.CA, "tls-ca", os.Getenv("PCS_TLS_CA"), "CA bundle that signs the cluster's certificates: mutual TLS on (default from $PCS_TLS_CA)")
	pf.StringVar(&g.tls.Cert, "tls-cert", os.Getenv("PCS_TLS_CERT"), "pcsctl's client certificate (default from $PCS_TLS_CERT)")
	pf.StringVar(&g.tls.Key, "tls-key", os.Getenv("PCS_TLS_KEY"), "key of the client certificate (default from $PCS_TLS_KEY)")
	pf.StringSliceVar(&g.pcsNames, "tls-pcs-names", nil, "identities (globs) PCS members' certificates must name (default "+client.DefaultPCSNames+")")
	pf.StringSliceVar(&g.nodeNames, "tls-node-names", nil, "identities (globs) data nodes' certificates must name (default "+client.DefaultNodeNames+")")
	root.AddCommand(&cobra.Command{Use: "version", Short: "Print pcsctl's build (version, revision, Go)", Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "pcsctl", version.Get()) }})
	root.AddCommand(statusCmd(g), healthCmd(g), memberCmd(g), kvCmd(g), tsoCmd(g), idCmd(g), logLevelCmd(g),
		tableCmd(g), rowCmd(g), shardCmd(g), nodeCmd(g), jobCmd(g), groupCmd(g), snapshotCmd(g),
		operatorCmd(g), schedulerCmd(g), configCmd(g), certCmd())
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group fail on an argument that names no
// subcommand (cobra would print the group's help and exit 0: a typo must not look like success).
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() || !cmd.HasParent() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return errors.New(msg)
	}
}
