package server

import (
	"context"
	"crypto/tls"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/version"
)

// The web console: a single page (server/console, embedded: no CDN, works offline) and the JSON
// it reads under /console/api/. Every member serves it on its HTTP address, behind the same TLS
// and role table as the other HTTP paths: reading needs any known role, the actions under
// /console/api/admin/ need admin. The API calls the same service methods as gRPC callers, so a
// member that is not the primary forwards what needs the primary; the heatmap, which only the
// primary samples, is proxied to the primary's HTTP address.

//go:embed console
var consoleFiles embed.FS

// consoleHeader must be on every console action: a custom header makes a browser send a
// preflight a cross-site page cannot pass, so another site cannot drive an admin's browser
// (holding its client certificate) into draining a node.
const consoleHeader = "X-PCS-Console"

// forwardedHeader marks a heatmap request a member proxied to the primary (never proxied twice).
const forwardedHeader = "X-PCS-Forwarded"

// consoleTimeout bounds each API call.
const consoleTimeout = 10 * time.Second

var consoleJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// consolePCS is the PCS service as the console calls it: a gRPC client of the primary (this
// member's own client address if it is the primary), so every view shows the primary's live
// state — node liveness and load are known there only — as pcsctl would.
func (s *Server) consolePCS(ctx context.Context) (pcspb.PCSClient, error) {
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli == nil {
		return s.peers.get(s.ClientAddr())
	}
	return cli, nil
}

// pj renders a protobuf message as JSON inside an encoding/json answer.
type pj struct{ m proto.Message }

func (p pj) MarshalJSON() ([]byte, error) { return consoleJSON.Marshal(p.m) }

func (s *Server) consoleRoutes(mux *http.ServeMux) {
	static, err := fs.Sub(consoleFiles, "console")
	if err != nil {
		panic(err) // the embedded tree is part of the build
	}
	files := http.StripPrefix("/console/", http.FileServer(http.FS(static)))
	mux.Handle("GET /console/", files)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
	get := func(path string, h func(ctx context.Context, v pcspb.PCSClient, q url.Values) (any, error)) {
		mux.HandleFunc("GET /console/api/"+path, func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), consoleTimeout)
			defer cancel()
			v, err := s.consolePCS(ctx)
			var out any
			if err == nil {
				out, err = h(ctx, v, r.URL.Query())
			}
			writeConsole(w, out, err)
		})
	}
	get("overview", func(ctx context.Context, v pcspb.PCSClient, _ url.Values) (any, error) {
		st := s.status(false)
		members, err := v.MemberList(ctx, &pcspb.MemberListRequest{})
		if err != nil {
			return nil, err
		}
		nodes, err := v.ListNodes(ctx, &pcspb.ListNodesRequest{})
		if err != nil {
			return nil, err
		}
		up := 0
		for _, n := range nodes.Nodes {
			if n.State == "up" {
				up++
			}
		}
		return map[string]any{"status": pj{st}, "members": pj{members}, "cluster_version": s.fsm.ClusterVersion(),
			"build": version.Get().String(), "tables": len(s.fsm.Tables()), "nodes": len(nodes.Nodes), "nodes_up": up}, nil
	})
	get("nodes", func(ctx context.Context, v pcspb.PCSClient, _ url.Values) (any, error) {
		resp, err := v.ListNodes(ctx, &pcspb.ListNodesRequest{})
		return pjOrNil(resp, err)
	})
	get("tables", func(ctx context.Context, v pcspb.PCSClient, _ url.Values) (any, error) {
		tables, err := v.ListTables(ctx, &pcspb.ListTablesRequest{})
		if err != nil {
			return nil, err
		}
		jobs, err := v.ListJobs(ctx, &pcspb.ListJobsRequest{})
		if err != nil {
			return nil, err
		}
		counts := map[string]int{}
		for _, t := range tables.Tables {
			_, counts[t.Name], _ = s.fsm.Table(t.Name)
		}
		return map[string]any{"tables": pj{tables}, "jobs": pj{jobs}, "shards": counts}, nil
	})
	get("table", func(ctx context.Context, v pcspb.PCSClient, q url.Values) (any, error) {
		t, err := v.GetTable(ctx, &pcspb.GetTableRequest{Name: q.Get("name")})
		if err != nil {
			return nil, err
		}
		shards, err := v.ScanShards(ctx, &pcspb.ScanShardsRequest{Table: q.Get("name"), Limit: 1000, WithStats: true})
		if err != nil {
			return nil, err
		}
		return map[string]any{"table": pj{t}, "shards": pj{shards}}, nil
	})
	get("shard", func(ctx context.Context, v pcspb.PCSClient, q url.Values) (any, error) {
		name, text := q.Get("table"), q.Get("key")
		t, err := v.GetTable(ctx, &pcspb.GetTableRequest{Name: name})
		if err != nil {
			return nil, err
		}
		key, err := catalog.EncodeKeyText(t.Table, text)
		if err != nil {
			return nil, toStatus(fmt.Errorf("%w: %w", ErrInvalid, err))
		}
		sh, err := v.GetShard(ctx, &pcspb.GetShardRequest{Table: name, Key: key})
		if err != nil {
			return nil, err
		}
		stats, err := v.ScanShards(ctx, &pcspb.ScanShardsRequest{Table: name, Start: sh.Shard.Start, Limit: 1, WithStats: true})
		if err != nil {
			return nil, err
		}
		ops, err := v.ListOperators(ctx, &pcspb.ListOperatorsRequest{ShardId: sh.Shard.Id})
		if err != nil {
			return nil, err
		}
		return map[string]any{"key": hex.EncodeToString(key), "shard": pj{sh.Shard}, "stats": pj{stats}, "operators": pj{ops}}, nil
	})
	get("operators", func(ctx context.Context, v pcspb.PCSClient, _ url.Values) (any, error) {
		ops, err := v.ListOperators(ctx, &pcspb.ListOperatorsRequest{Finished: true})
		if err != nil {
			return nil, err
		}
		cfg, err := v.GetScheduleConfig(ctx, &pcspb.ScheduleConfigRequest{})
		if err != nil {
			return nil, err
		}
		return map[string]any{"operators": pj{ops}, "schedule": pj{cfg}}, nil
	})
	// Events: the primary's log (it applied every command and saw the operators and node
	// liveness); a member that cannot reach the primary shows its own.
	mux.HandleFunc("GET /console/api/events", func(w http.ResponseWriter, r *http.Request) {
		if !s.isPrimary() && r.Header.Get(forwardedHeader) == "" {
			s.proxyToPrimary(w, r, s.eventsHTTP)
			return
		}
		s.eventsHTTP(w, r)
	})
	mux.HandleFunc("GET /console/api/heatmap", s.heatmapHTTP)

	post := func(path string, h func(ctx context.Context, v pcspb.PCSClient, body map[string]any) (any, error)) {
		mux.HandleFunc("POST /console/api/admin/"+path, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(consoleHeader) == "" {
				writeConsole(w, nil, toStatus(fmt.Errorf("%w: console actions need the %s header", ErrInvalid, consoleHeader)))
				return
			}
			var body map[string]any
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil {
				writeConsole(w, nil, toStatus(fmt.Errorf("%w: body: %v", ErrInvalid, err)))
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), consoleTimeout)
			defer cancel()
			s.log.Info("console action", "action", path, "body", body, "remote", r.RemoteAddr)
			v, err := s.consolePCS(ctx)
			var out any
			if err == nil {
				out, err = h(ctx, v, body)
			}
			writeConsole(w, out, err)
		})
	}
	post("drain", func(ctx context.Context, v pcspb.PCSClient, b map[string]any) (any, error) {
		id, err := bodyUint(b, "node_id")
		if err != nil {
			return nil, err
		}
		_, err = v.SetNodeState(ctx, &pcspb.SetNodeStateRequest{NodeId: id, State: "offline"})
		return map[string]any{"node_id": id, "state": "offline"}, err
	})
	post("cancel-job", func(ctx context.Context, v pcspb.PCSClient, b map[string]any) (any, error) {
		t, _ := b["table"].(string)
		_, err := v.CancelJob(ctx, &pcspb.CancelJobRequest{Table: t})
		return map[string]any{"table": t, "cancelled": err == nil}, err
	})
	post("scheduler", func(ctx context.Context, v pcspb.PCSClient, b map[string]any) (any, error) {
		name, _ := b["name"].(string)
		pause, ok := b["paused"].(bool)
		if !ok {
			return nil, toStatus(fmt.Errorf("%w: paused must be true or false", ErrInvalid))
		}
		cfg, err := v.GetScheduleConfig(ctx, &pcspb.ScheduleConfigRequest{})
		if err != nil {
			return nil, err
		}
		paused, found := pcspb.PausedSchedulersSetting(cfg.Schedulers, name, pause)
		if !found {
			return nil, toStatus(fmt.Errorf("%w: no scheduler %q", ErrInvalid, name))
		}
		resp, err := v.SetScheduleConfig(ctx, &pcspb.SetScheduleConfigRequest{Key: "paused-schedulers", Value: paused})
		return pjOrNil(resp, err)
	})
}

func pjOrNil(m proto.Message, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return pj{m}, nil
}

func bodyUint(b map[string]any, key string) (uint64, error) {
	switch v := b[key].(type) {
	case float64:
		if v >= 1 && v == float64(uint64(v)) {
			return uint64(v), nil
		}
	case string:
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, toStatus(fmt.Errorf("%w: %s must be a positive integer", ErrInvalid, key))
}

// writeConsole writes out as JSON, or err as {"error": ...} with the HTTP status of its gRPC
// code.
func writeConsole(w http.ResponseWriter, out any, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		st, _ := status.FromError(toStatus(err))
		code := http.StatusInternalServerError
		switch st.Code() {
		case codes.InvalidArgument, codes.OutOfRange:
			code = http.StatusBadRequest
		case codes.NotFound:
			code = http.StatusNotFound
		case codes.PermissionDenied, codes.Unauthenticated:
			code = http.StatusForbidden
		case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
			code = http.StatusConflict
		case codes.Unavailable, codes.DeadlineExceeded:
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": st.Message(), "code": st.Code().String()})
		return
	}
	json.NewEncoder(w).Encode(out)
}

// eventsHTTP answers from this member's event log.
func (s *Server) eventsHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 500
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 || n > clusterEventsKept+shardEventsKept {
			writeConsole(w, nil, toStatus(fmt.Errorf("%w: limit %q must be in 1..%d", ErrInvalid, l, clusterEventsKept+shardEventsKept)))
			return
		}
		limit = n
	}
	var kinds []string
	if k := q.Get("kind"); k != "" {
		kinds = strings.Split(k, ",")
	}
	evs := s.events.recent(kinds, limit)
	if evs == nil {
		evs = []meta.Event{}
	}
	writeConsole(w, map[string]any{"member": s.cfg.Name, "primary": s.isPrimary(), "events": evs}, nil)
}

// heatmapHTTP answers a heatmap query on the primary, or proxies it there.
func (s *Server) heatmapHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.isPrimary() {
		if r.Header.Get(forwardedHeader) != "" {
			writeConsole(w, nil, s.notPrimary())
			return
		}
		s.proxyToPrimary(w, r, nil)
		return
	}
	q := r.URL.Query()
	hq := heatQuery{Metric: q.Get("metric"), Rows: 128}
	if hq.Metric == "" {
		hq.Metric = "writes"
	}
	names := map[uint64]string{}
	for _, t := range s.fsm.Tables() {
		names[t.Id] = t.Name
		if t.Name == q.Get("table") {
			hq.Table = t.Id
		}
	}
	hq.TableFor = func(id uint64) string {
		if n, ok := names[id]; ok {
			return n
		}
		return fmt.Sprintf("#%d", id)
	}
	var err error
	if t := q.Get("table"); t != "" && hq.Table == 0 {
		err = fmt.Errorf("%w: %q", meta.ErrTableNotFound, t)
	}
	for _, p := range []struct {
		name string
		to   *int64
	}{{"from_ms", &hq.FromMs}, {"to_ms", &hq.ToMs}} {
		if v := q.Get(p.name); v != "" && err == nil {
			if *p.to, err = strconv.ParseInt(v, 10, 64); err != nil {
				err = fmt.Errorf("%w: %s %q is not a number", ErrInvalid, p.name, v)
			}
		}
	}
	if v := q.Get("rows"); v != "" && err == nil {
		if hq.Rows, err = strconv.Atoi(v); err != nil {
			err = fmt.Errorf("%w: rows %q is not a number", ErrInvalid, v)
		}
	}
	for _, p := range []struct {
		name string
		to   *[]byte
	}{{"start", &hq.Start}, {"end", &hq.End}} {
		if v := q.Get(p.name); v != "" && err == nil {
			if hq.Table == 0 {
				err = fmt.Errorf("%w: a key range needs a table", ErrInvalid)
			} else if *p.to, err = hex.DecodeString(v); err != nil {
				err = fmt.Errorf("%w: %s is not hex: %v", ErrInvalid, p.name, err)
			}
		}
	}
	var ans *heatAnswer
	if err == nil {
		ans, err = s.heat.query(hq)
	}
	if ans != nil {
		ans.Interval = s.cfg.HeatmapInterval.Milliseconds()
	}
	writeConsole(w, ans, err)
}

// proxyToPrimary sends r to the primary's HTTP address, as this member (its peer certificate).
// If the primary is unknown or does not answer, fallback (if not nil) answers instead.
func (s *Server) proxyToPrimary(w http.ResponseWriter, r *http.Request, fallback http.HandlerFunc) {
	name, _ := s.primary()
	m := s.fsm.Members()[name]
	if name == "" || m == nil || m.HttpAddr == "" {
		if fallback != nil {
			fallback(w, r)
			return
		}
		writeConsole(w, nil, s.notPrimary())
		return
	}
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	target := &url.URL{Scheme: scheme, Host: m.HttpAddr}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(forwardedHeader, s.cfg.Name)
		},
		Transport: s.proxyTr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if fallback != nil {
				fallback(w, r)
				return
			}
			writeConsole(w, nil, toStatus(fmt.Errorf("%w: primary %s at %s: %v", ErrNotPrimary, name, m.HttpAddr, err)))
		},
	}
	p.ServeHTTP(w, r)
}

// newProxyTransport is the HTTP transport of proxyToPrimary, kept for the server's life so that
// a console polling a member reuses its connection to the primary; under TLS it dials as this
// member (its peer certificate) and wants a peer's certificate back.
func (s *Server) newProxyTransport() *http.Transport {
	tr := &http.Transport{ResponseHeaderTimeout: consoleTimeout, IdleConnTimeout: time.Minute}
	if t := s.cfg.TLS; t != nil {
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			d := &tls.Dialer{Config: t.Source.ClientConfig(host, t.AllowedPeers)}
			return d.DialContext(ctx, network, addr)
		}
	}
	return tr
}
