package server

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postdb/pcs/api/pcspb"
)

// httpStatus is the JSON of /status.
type httpStatus struct {
	Name          string `json:"name"`
	State         string `json:"state"`
	RaftState     string `json:"raft_state"`
	Term          uint64 `json:"term"`
	Primary       string `json:"primary"`
	PrimaryAddr   string `json:"primary_addr"`
	AppliedIndex  uint64 `json:"applied_index"`
	CommitIndex   uint64 `json:"commit_index"`
	LastIndex     uint64 `json:"last_index"`
	Revision      uint64 `json:"revision"`
	LastContactMs int64  `json:"last_contact_ms"`
	Version       string `json:"version"`
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		st := s.State()
		if st != pcspb.NodeState_NODE_STATE_RUNNING {
			http.Error(w, pcspb.StateName(st), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("running\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st := s.status(false)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(httpStatus{
			Name: st.Name, State: pcspb.StateName(st.State), RaftState: st.RaftState, Term: st.Term,
			Primary: st.PrimaryName, PrimaryAddr: st.PrimaryAddr, AppliedIndex: st.AppliedIndex,
			CommitIndex: st.CommitIndex, LastIndex: st.LastIndex, Revision: st.Revision,
			LastContactMs: st.LastContactMs, Version: st.Version,
		})
	})
	s.consoleRoutes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
