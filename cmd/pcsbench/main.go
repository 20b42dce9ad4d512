// Command pcsbench loads a PCS cluster and reports throughput and latency.
//
//	pcsbench tso --endpoints E --clients N --concurrency C --duration D
//	pcsbench put --endpoints E --clients N --concurrency C --duration D --value-size 256
//
// Each of the N clients is a separate client.Client (its own connections and TSO stream); each
// runs C goroutines issuing requests back to back. The last line printed is a one-line summary.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/pcstls"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pcsbench:", err)
		os.Exit(1)
	}
}

type params struct {
	endpoints   []string
	clients     int
	concurrency int
	duration    time.Duration
	valueSize   int
	keys        int
	cpuProfile  string
	perOp       int // items one operation stands for (a batch); 0 or 1: one
	tls         pcstls.Files
}

// newClient returns a client of the endpoints, with mutual TLS if the --tls-* flags name files.
func (p *params) newClient() (*client.Client, error) {
	var opts []client.Option
	if p.tls.Enabled() {
		src, err := pcstls.NewSource(p.tls)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(src))
	}
	return client.New(p.endpoints, opts...)
}

func (p *params) validate() error {
	switch {
	case len(p.endpoints) == 0:
		return errors.New("--endpoints: at least one address is required")
	case p.clients < 1 || p.concurrency < 1:
		return errors.New("--clients and --concurrency must be at least 1")
	case p.duration <= 0:
		return errors.New("--duration must be positive")
	case p.valueSize < 0 || p.valueSize > 1<<20:
		return errors.New("--value-size must be in 0..1048576")
	case p.keys < 1:
		return errors.New("--keys must be at least 1")
	case p.tls.Validate() != nil:
		return p.tls.Validate()
	}
	return nil
}

func newRootCmd() *cobra.Command {
	p := &params{}
	root := &cobra.Command{Use: "pcsbench", Short: "Benchmark a PCS cluster", SilenceUsage: true, SilenceErrors: true}
	pf := root.PersistentFlags()
	pf.StringSliceVar(&p.endpoints, "endpoints", []string{"127.0.0.1:3379"}, "PCS client addresses")
	pf.IntVar(&p.clients, "clients", 1, "number of independent clients")
	pf.IntVar(&p.concurrency, "concurrency", 1, "concurrent requests per client")
	pf.DurationVar(&p.duration, "duration", 10*time.Second, "how long to run")
	pf.StringVar(&p.tls.CA, "tls-ca", "", "CA bundle: mutual TLS on (with --tls-cert and --tls-key)")
	pf.StringVar(&p.tls.Cert, "tls-cert", "", "client certificate")
	pf.StringVar(&p.tls.Key, "tls-key", "", "client certificate's key")
	pf.StringVar(&p.cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator to this file")
	tso := &cobra.Command{
		Use: "tso", Short: "Timestamps, one per request, batched by the client", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench(cmd.Context(), "tso", p, func(c *client.Client, worker, i int) func(context.Context) error {
				return func(ctx context.Context) error { _, err := c.GetTS(ctx); return err }
			})
		},
	}
	put := &cobra.Command{
		Use: "put", Short: "Replicated writes to the system key-value namespace", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			value := make([]byte, p.valueSize)
			rand.Read(value)
			return bench(cmd.Context(), "put", p, func(c *client.Client, worker, i int) func(context.Context) error {
				return func(ctx context.Context) error {
					key := fmt.Appendf(nil, "bench/%08d", (worker*7919+i)%p.keys)
					_, err := c.Put(ctx, key, value)
					return err
				}
			})
		},
	}
	put.Flags().IntVar(&p.valueSize, "value-size", 256, "value size in bytes")
	put.Flags().IntVar(&p.keys, "keys", 10000, "number of distinct keys written")
	root.AddCommand(tso, put, routeCmd(p), heartbeatCmd(p), ddlCmd(p), kvCmd(p))
	return root
}

// bench runs op from clients×concurrency goroutines for the duration and prints the result.
func bench(ctx context.Context, name string, p *params, op func(c *client.Client, worker, i int) func(context.Context) error) error {
	if err := p.validate(); err != nil {
		return err
	}
	clients := make([]*client.Client, p.clients)
	for i := range clients {
		c, err := p.newClient()
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
		// Warm up: find the primary and open connections before the clock starts.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = op(c, -1-i, 0)(wctx) // a worker number no real worker has
		cancel()
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	if p.cpuProfile != "" {
		f, err := os.Create(p.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	workers := p.clients * p.concurrency
	lat := make([][]time.Duration, workers)
	errs := make([]int, workers)
	var firstErr error
	var errOnce sync.Once
	end := time.Now().Add(p.duration)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%p.clients]
			l := make([]time.Duration, 0, 1024)
			// Each worker has a context of its own, as each request of a real caller would.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			for i := 0; ctx.Err() == nil; i++ {
				f := op(c, w, i)
				t0 := time.Now()
				err := f(ctx)
				if err != nil {
					// Past the end of the run: the deadline's timer may not have fired yet,
					// but the failure is the deadline's, not the cluster's.
					if ctx.Err() != nil || !time.Now().Before(end) {
						break
					}
					errs[w]++
					errOnce.Do(func() { firstErr = err })
					continue
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	nerr := 0
	for w := range lat {
		all = append(all, lat[w]...)
		nerr += errs[w]
	}
	slices.Sort(all)
	pct := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(q*float64(len(all))))].Microseconds()) / 1000
	}
	mx := 0.0
	if len(all) > 0 {
		mx = float64(all[len(all)-1].Microseconds()) / 1000
	}
	fmt.Printf("%s clients=%d concurrency=%d duration=%s ops=%d errors=%d\n", name, p.clients, p.concurrency, elapsed.Round(time.Millisecond), len(all), nerr)
	if firstErr != nil {
		fmt.Printf("first error: %v\n", firstErr)
	}
	items := float64(len(all))
	if p.perOp > 1 {
		items *= float64(p.perOp)
		fmt.Printf("(%d calls of %d items each)\n", len(all), p.perOp)
	}
	fmt.Printf("%s ops/s=%.0f p50=%.3fms p90=%.3fms p99=%.3fms max=%.3fms errors=%d\n",
		name, items/elapsed.Seconds(), pct(0.50), pct(0.90), pct(0.99), mx, nerr)
	return nil
}
