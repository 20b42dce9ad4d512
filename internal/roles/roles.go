// Package roles is the one table of who may call what (DESIGN §11): every gRPC method of PCS
// and of the data node, and every HTTP path of both, mapped to the roles allowed — client,
// admin, node, peer. With mutual TLS on, a caller's roles are the allow lists its certificate
// matches; a call none of its roles may make is refused with PermissionDenied and the reason,
// and a method missing from the table is refused to everyone (a new call starts denied).
//
//   - client: keys, rows, timestamps and ids, DDL, reading the cluster's state.
//   - admin: everything a client may, plus membership, transfer, log level, snapshots,
//     scheduling and configuration changes, node states, pprof.
//   - node: register, heartbeat, ask for a split id, have replicas removed, replicate — acting
//     only as the node id its certificate registered (the server checks that).
//   - peer: PCS members: Raft, and any call (a member forwards its callers' calls to the
//     primary; the member checked the caller first).
package roles

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/pcstls"
)

// Role is a set of roles.
type Role uint8

// The roles.
const (
	Client Role = 1 << iota
	Admin
	Node
	Peer
	// Anyone needs no certificate (health probes).
	Anyone
)

// Names of the roles, in order.
var roleNames = []struct {
	r    Role
	name string
}{{Client, "client"}, {Admin, "admin"}, {Node, "node"}, {Peer, "peer"}, {Anyone, "anyone"}}

func (r Role) String() string {
	var out []string
	for _, n := range roleNames {
		if r&n.r != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// Shorthands of the table.
const (
	read    = Client | Admin | Node | Peer // reading the cluster's state: anyone known
	client  = Client | Admin | Peer
	admin   = Admin | Peer
	node    = Node | Peer
	nodeKV  = Node
	rows    = Client | Admin
	monitor = Client | Admin | Node | Peer
	// A data node knows no PCS members (peers) as callers.
	nodeMonitor = Client | Admin | Node
)

// Row is one line of the table.
type Row struct {
	Service string // "PCS", "KV" (data node), "HTTP pcs", "HTTP pcsnode"
	Call    string // full gRPC method or HTTP path
	Roles   Role
}

// table is every call and the roles allowed. It is never written.
var table = []Row{
	{"PCS", pcspb.PCS_Status_FullMethodName, read},
	{"PCS", pcspb.PCS_MemberList_FullMethodName, read},
	{"PCS", pcspb.PCS_MemberAdd_FullMethodName, admin},
	{"PCS", pcspb.PCS_MemberRemove_FullMethodName, admin},
	{"PCS", pcspb.PCS_MemberPromote_FullMethodName, admin},
	{"PCS", pcspb.PCS_MemberTransfer_FullMethodName, admin},
	{"PCS", pcspb.PCS_MemberUpdate_FullMethodName, admin},
	{"PCS", pcspb.PCS_ReadIndex_FullMethodName, client},
	{"PCS", pcspb.PCS_Put_FullMethodName, client},
	{"PCS", pcspb.PCS_Delete_FullMethodName, client},
	{"PCS", pcspb.PCS_Get_FullMethodName, client},
	{"PCS", pcspb.PCS_Range_FullMethodName, client},
	{"PCS", pcspb.PCS_Watch_FullMethodName, client},
	{"PCS", pcspb.PCS_Tso_FullMethodName, client},
	{"PCS", pcspb.PCS_AllocIDs_FullMethodName, client},
	{"PCS", pcspb.PCS_RegisterNode_FullMethodName, node},
	{"PCS", pcspb.PCS_Heartbeat_FullMethodName, node},
	{"PCS", pcspb.PCS_AskSplit_FullMethodName, node},
	{"PCS", pcspb.PCS_RemoveReplicas_FullMethodName, node},
	{"PCS", pcspb.PCS_ListNodes_FullMethodName, read},
	{"PCS", pcspb.PCS_SetNodeState_FullMethodName, admin},
	{"PCS", pcspb.PCS_CreateTable_FullMethodName, client},
	{"PCS", pcspb.PCS_DropTable_FullMethodName, client},
	{"PCS", pcspb.PCS_AlterTable_FullMethodName, client},
	{"PCS", pcspb.PCS_ListJobs_FullMethodName, client},
	{"PCS", pcspb.PCS_CancelJob_FullMethodName, client},
	{"PCS", pcspb.PCS_AlterPartitions_FullMethodName, client},
	{"PCS", pcspb.PCS_SplitShard_FullMethodName, admin},
	{"PCS", pcspb.PCS_MoveShard_FullMethodName, admin},
	{"PCS", pcspb.PCS_TransferPrimary_FullMethodName, admin},
	{"PCS", pcspb.PCS_ListOperators_FullMethodName, client},
	{"PCS", pcspb.PCS_HotShards_FullMethodName, client},
	{"PCS", pcspb.PCS_Explain_FullMethodName, client},
	{"PCS", pcspb.PCS_AddOperator_FullMethodName, admin},
	{"PCS", pcspb.PCS_CancelOperator_FullMethodName, admin},
	{"PCS", pcspb.PCS_GetScheduleConfig_FullMethodName, client},
	{"PCS", pcspb.PCS_SetScheduleConfig_FullMethodName, admin},
	{"PCS", pcspb.PCS_EvictPrimaries_FullMethodName, admin},
	{"PCS", pcspb.PCS_GetTable_FullMethodName, read},
	{"PCS", pcspb.PCS_ListTables_FullMethodName, read},
	{"PCS", pcspb.PCS_GetShard_FullMethodName, read},
	{"PCS", pcspb.PCS_BatchGetShards_FullMethodName, read},
	{"PCS", pcspb.PCS_GetShardByID_FullMethodName, read},
	{"PCS", pcspb.PCS_ScanShards_FullMethodName, read},
	{"PCS", pcspb.PCS_GetLogLevel_FullMethodName, client},
	{"PCS", pcspb.PCS_SetLogLevel_FullMethodName, admin},
	{"PCS", pcspb.PCS_SetNodeConfig_FullMethodName, admin},
	{"PCS", pcspb.PCS_GetNodeConfig_FullMethodName, read},
	{"PCS", pcspb.PCS_SnapshotSave_FullMethodName, admin},
	{"KV", pcspb.KV_Get_FullMethodName, rows},
	{"KV", pcspb.KV_Put_FullMethodName, rows},
	{"KV", pcspb.KV_Delete_FullMethodName, rows},
	{"KV", pcspb.KV_Scan_FullMethodName, rows},
	{"KV", pcspb.KV_Batch_FullMethodName, rows},
	{"KV", pcspb.KV_Replicate_FullMethodName, nodeKV},
	{"KV", pcspb.KV_InstallSnapshot_FullMethodName, nodeKV},
	{"KV", pcspb.KV_Position_FullMethodName, nodeKV},
	{"KV", pcspb.KV_ReadIndex_FullMethodName, nodeKV},
	{"HTTP pcs", "/health", Anyone},
	{"HTTP pcs", "/ready", Anyone},
	{"HTTP pcs", "/metrics", monitor},
	{"HTTP pcs", "/status", monitor},
	{"HTTP pcs", "/debug/pprof/", admin},
	{"HTTP pcs", "/", monitor}, // redirects to /console/
	{"HTTP pcs", "/console/", monitor},
	{"HTTP pcs", "/console/api/admin/", admin},
	{"HTTP pcsnode", "/health", Anyone},
	{"HTTP pcsnode", "/metrics", nodeMonitor},
	{"HTTP pcsnode", "/debug/pprof/", Admin}, // served while the pprof node setting is on
}

// Table returns a copy of the whole table, in order.
func Table() []Row { return slices.Clone(table) }

// Of returns the roles that may make a call of service ("PCS", "KV", "HTTP pcs", "HTTP
// pcsnode"): a gRPC method, or an HTTP path (a path under "/debug/pprof/", "/console/" or
// "/console/api/admin/" is the longest such row's). A call missing from the table has no role
// (refused).
func Of(service, call string) Role {
	for _, prefix := range []string{"/debug/pprof/", "/console/api/admin/", "/console/"} {
		if strings.HasPrefix(call, prefix) {
			call = prefix
			break
		}
	}
	for _, r := range table {
		if r.Service == service && r.Call == call {
			return r.Roles
		}
	}
	return 0
}

// Lists are the allow lists of each role. A nil list admits nobody; pcstls.Allow with no
// patterns admits any certificate of the CA (only with --tls-allow-any-of-ca).
type Lists struct {
	Client, Admin, Node, Peer *pcstls.Allow
}

// Roles returns the roles cert has.
func (l Lists) Roles(cert *x509.Certificate) Role {
	var r Role
	for _, x := range []struct {
		a    *pcstls.Allow
		role Role
	}{{l.Client, Client}, {l.Admin, Admin}, {l.Node, Node}, {l.Peer, Peer}} {
		if x.a != nil && x.a.Permits(cert) {
			r |= x.role
		}
	}
	return r
}

// check returns nil if cert may make the call, and otherwise why not.
func (l Lists) check(service, call string, cert *x509.Certificate) error {
	need := Of(service, call)
	if need&Anyone != 0 {
		return nil
	}
	if need == 0 {
		return fmt.Errorf("%w: %s is not in the role table: nobody may call it", pcstls.ErrNotAllowed, call)
	}
	if cert == nil {
		return fmt.Errorf("%w: no client certificate", pcstls.ErrTLS)
	}
	have := l.Roles(cert)
	if have&need == 0 {
		return fmt.Errorf("%w: %s has role %s; %s needs %s", pcstls.ErrNotAllowed, pcstls.Identity(cert), have, call, need)
	}
	return nil
}

type callerKey struct{}

// Caller is who made a call: the identity of its certificate and its roles.
type Caller struct {
	Identity string
	Roles    Role
}

// CallerFrom returns the caller an interceptor recorded (false without TLS).
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// WithCaller records a caller in ctx (the interceptors do; tests too).
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

// Interceptors return the unary and stream interceptors of service ("PCS" or "KV") that refuse
// a call the caller's certificate has no role for, with PermissionDenied (Unauthenticated
// without a valid certificate) and the reason, and record the caller for the handler.
func (l Lists) Interceptors(service string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	check := func(ctx context.Context, method string) (context.Context, error) {
		cert, err := pcstls.PeerCertificate(ctx)
		if err != nil {
			return nil, status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
		}
		if err := l.check(service, method, cert); err != nil {
			return nil, status.Errorf(codes.PermissionDenied, "%s: %v", method, err)
		}
		return WithCaller(ctx, Caller{Identity: pcstls.Identity(cert), Roles: l.Roles(cert)}), nil
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ctx, err := check(ctx, info.FullMethod)
			if err != nil {
				return nil, err
			}
			return h(ctx, req)
		}, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ctx, err := check(ss.Context(), info.FullMethod)
			if err != nil {
				return err
			}
			return h(srv, wrappedStream{ss, ctx})
		}
}

// HTTPCheck returns the check of service's HTTP paths for pcstls.HTTP.
func (l Lists) HTTPCheck(service string) func(path string, cert *x509.Certificate) error {
	return func(path string, cert *x509.Certificate) error { return l.check(service, path, cert) }
}

// Markdown renders the table for the README: one line per service and set of roles, in the
// table's order.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| service | calls | roles |\n|---|---|---|\n")
	type key struct {
		service string
		roles   Role
	}
	var order []key
	calls := map[key][]string{}
	for _, r := range table {
		k := key{r.Service, r.Roles}
		if _, ok := calls[k]; !ok {
			order = append(order, k)
		}
		name := r.Call
		if i := strings.LastIndex(name, "/"); !strings.HasPrefix(r.Service, "HTTP") && i >= 0 {
			name = name[i+1:]
		}
		calls[k] = append(calls[k], "`"+name+"`")
	}
	for _, k := range order {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", k.service, strings.Join(calls[k], ", "), strings.ReplaceAll(k.roles.String(), ",", ", "))
	}
	b.WriteString("| Raft port | | peer |\n")
	return b.String()
}
