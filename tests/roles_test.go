package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/roles"
)

// TestRoleTableWalk: one PCS member and one data node under mutual TLS with an allow list per
// role. Every gRPC method of both services and every HTTP path of the role table is called with
// a client's, an admin's, a node's, a peer's and a foreign CA's certificate: a call the table
// allows is not refused (whatever else it answers to an empty request), every other one gets
// PermissionDenied (Unauthenticated for the foreign CA) with the reason. Every method the
// services have is in the table. A client whose member list names a server of another name
// refuses to talk to it.
func TestRoleTableWalk(t *testing.T) {
	root := t.TempDir()
	pki := newTestPKI(t, filepath.Join(root, "pki"))
	other := newTestPKI(t, filepath.Join(root, "other"))
	allow := []string{"--tls-allowed-peers", "pcs-*", "--tls-allowed-nodes", "node-*", "--tls-allowed-clients", "app", "--tls-allowed-admins", "admin"}
	pc := startClusterWith(t, 1, func(p *proc) []string { return append(tlsFlags(pki.issue("pcs-"+p.name)), allow...) })
	c, err := client.New(pc.endpoints(), client.WithTLS(pki.source("admin")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc.primary(c)
	n := &nodeProc{t: t, dir: filepath.Join(root, "node"), addr: freeAddr(t),
		args: append([]string{"--endpoints", strings.Join(pc.endpoints(), ","), "--log-level", "warn", "--http-addr", freeAddr(t),
			"--tls-allowed-nodes", "node-*", "--tls-allowed-clients", "app", "--tls-allowed-admins", "admin"}, tlsFlags(pki.issue("node-1"))...)}
	n.start()
	t.Cleanup(n.kill)
	nodeHTTP := n.args[slices.Index(n.args, "--http-addr")+1]

	ourCA := x509.NewCertPool()
	ourCA.AppendCertsFromPEM(pki.ca.CertPEM)
	callers := []struct {
		name string
		role roles.Role
		cfg  *tls.Config
	}{
		{"client", roles.Client, clientTLS(t, pki.issue("app"), ourCA)},
		{"admin", roles.Admin, clientTLS(t, pki.issue("admin"), ourCA)},
		{"node", roles.Node, clientTLS(t, pki.issue("node-9"), ourCA)},
		{"peer", roles.Peer, clientTLS(t, pki.issue("pcs-x"), ourCA)},
		{"foreign CA", 0, clientTLS(t, other.issue("admin"), ourCA)},
	}
	services := []struct {
		name, addr string
		desc       protoreflect.ServiceDescriptor
	}{
		{"PCS", pc.procs[0].client, pcspb.File_pcs_proto.Services().ByName("PCS")},
		{"KV", n.addr, pcspb.File_kv_proto.Services().ByName("KV")},
	}
	for _, svc := range services {
		methods := svc.desc.Methods()
		for i := range methods.Len() {
			m := methods.Get(i)
			full := fmt.Sprintf("/%s/%s", svc.desc.FullName(), m.Name())
			need := roles.Of(svc.name, full)
			if need == 0 {
				t.Errorf("%s is not in the role table", full)
				continue
			}
			for _, cl := range callers {
				err := invoke(t, rawTLSConn(t, svc.addr, cl.cfg), full, m)
				code := status.Code(err)
				switch {
				case cl.role == 0:
					if code != codes.Unauthenticated || !strings.Contains(err.Error(), "unknown authority") {
						t.Errorf("%s by a foreign CA's certificate: %v", full, err)
					}
				case need&cl.role != 0:
					if code == codes.PermissionDenied || code == codes.Unauthenticated {
						t.Errorf("%s (%s) refused to a %s: %v", full, need, cl.name, err)
					}
				default:
					if code != codes.PermissionDenied || !strings.Contains(err.Error(), "needs "+need.String()) {
						t.Errorf("%s (%s) by a %s: %v, want PermissionDenied saying what it needs", full, need, cl.name, err)
					}
				}
			}
		}
	}
	for _, r := range roles.Table() {
		if !strings.HasPrefix(r.Service, "HTTP") {
			continue
		}
		base := "https://" + pc.procs[0].http
		if r.Service == "HTTP pcsnode" {
			base = "https://" + nodeHTTP
		}
		path := r.Call
		if path == "/debug/pprof/" {
			path = "/debug/pprof/cmdline"
		}
		for _, cl := range callers {
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cl.cfg}, Timeout: 10 * time.Second}
			resp, err := hc.Get(base + path)
			if err != nil {
				t.Fatalf("GET %s%s: %v", base, path, err)
			}
			resp.Body.Close()
			allowed := r.Roles&roles.Anyone != 0 || r.Roles&cl.role != 0
			if refused := resp.StatusCode == 401 || resp.StatusCode == 403; refused == allowed {
				t.Errorf("%s %s by a %s: HTTP %d, allowed by the table: %v", r.Service, path, cl.name, resp.StatusCode, allowed)
			}
		}
	}

	// A node certificate acts only as the node it registered: node-9 may not heartbeat as
	// node-1's id, nor have replicas removed as its primary.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nodeID uint64
	waitFor(t, 20*time.Second, "the data node registered", func() bool {
		resp, err := c.ListNodes(ctx)
		if err == nil && len(resp.Nodes) == 1 {
			nodeID = resp.Nodes[0].Node.Id
		}
		return nodeID != 0
	})
	impostor := pcspb.NewPCSClient(rawTLSConn(t, pc.procs[0].client, callers[2].cfg))
	hb, err := impostor.Heartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hb.Send(&pcspb.NodeHeartbeat{NodeId: nodeID, Seq: 1})
	if _, err := hb.Recv(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "may act only as") {
		t.Errorf("node-9 heartbeating as node %d: %v", nodeID, err)
	}
	if _, err := impostor.RemoveReplicas(ctx, &pcspb.RemoveReplicasRequest{ShardId: 1, Primary: nodeID}); status.Code(err) == codes.OK {
		t.Errorf("node-9 removing replicas as node %d was not refused", nodeID)
	}

	// A member address rewritten to a server of the CA with another name: the client refuses it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := grpc.NewServer(grpc.Creds(pki.source("app").ServerCredentials(nil)))
	pcspb.RegisterPCSServer(fake, pcspb.UnimplementedPCSServer{})
	go fake.Serve(ln)
	defer fake.Stop()
	fc, err := client.New([]string{ln.Addr().String()}, client.WithTLS(pki.source("app")))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if _, err := fc.Put(pctx, []byte("k"), []byte("v")); !errors.Is(err, client.ErrTLS) || !strings.Contains(err.Error(), "CN=app") {
		t.Fatalf("a put to a server named app: %v, want a TLS refusal naming it", err)
	}
}

// invoke calls a method with an empty request (a stream: opened, closed, one answer read) and
// returns its error.
func invoke(t *testing.T, cc *grpc.ClientConn, full string, m protoreflect.MethodDescriptor) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, resp := dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output())
	if !m.IsStreamingClient() && !m.IsStreamingServer() {
		return cc.Invoke(ctx, full, req, resp)
	}
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: m.IsStreamingClient(), ServerStreams: m.IsStreamingServer()}, full)
	if err != nil {
		return err
	}
	if err := st.SendMsg(req); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		// The answer says why the stream ended.
		return st.RecvMsg(resp)
	}
	st.CloseSend()
	err = st.RecvMsg(resp)
	if status.Code(err) == codes.DeadlineExceeded {
		return nil // an open stream (a watch, a snapshot) was not refused
	}
	return err
}
