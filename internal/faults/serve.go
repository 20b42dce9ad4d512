package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Serve listens on addr and serves Handler there until the returned stop is called. It fails
// with ErrDisabled in a binary built without the hooks.
func Serve(addr string, clk *Clock, stalls *Stalls) (stop func(context.Context) error, err error) {
	if !Enabled {
		return nil, ErrDisabled
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faults: admin address: %w", err)
	}
	srv := &http.Server{Handler: Handler(clk, stalls), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv.Shutdown, nil
}
