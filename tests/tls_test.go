package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/pcstls"
)

// testPKI is a CA in a directory and the certificates it issued there.
type testPKI struct {
	t   testing.TB
	dir string
	ca  *pcstls.CA
}

func newTestPKI(t testing.TB, dir string) *testPKI {
	ca, err := pcstls.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteCA(dir); err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, dir: dir, ca: ca}
}

func (p *testPKI) issue(name string) pcstls.Files {
	p.t.Helper()
	is, err := p.ca.Issue(name, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	f, err := is.Write(p.dir, name)
	if err != nil {
		p.t.Fatal(err)
	}
	return f
}

func (p *testPKI) source(name string) *pcstls.Source {
	p.t.Helper()
	src, err := pcstls.NewSource(p.issue(name))
	if err != nil {
		p.t.Fatal(err)
	}
	return src
}

func tlsFlags(f pcstls.Files) []string {
	return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
}

// rawTLSConn is a gRPC connection with a hand-made TLS config (no certificate, another CA's).
func rawTLSConn(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func clientTLS(t *testing.T, f pcstls.Files, serverCA *x509.CertPool) *tls.Config {
	cfg := &tls.Config{RootCAs: serverCA, MinVersion: tls.VersionTLS12}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg
}

// TestMutualTLSEverywhere: 3 pcs and 3 pcsnode processes with mutual TLS on every port and
// allowed identities per kind of caller. A client with an allowed certificate writes and reads
// system keys and rows and takes timestamps; a caller with no certificate, one of another CA,
// or a disallowed name is refused on every port with an error that says which; a client may
// not act as a data node nor replicate; the Raft port refuses plaintext and non-peers; a
// certificate rewritten on disk is presented by the next connection, without a restart.
func TestMutualTLSEverywhere(t *testing.T) {
	root := t.TempDir()
	pki := newTestPKI(t, filepath.Join(root, "pki"))
	other := newTestPKI(t, filepath.Join(root, "other"))
	allow := []string{"--tls-allowed-peers", "pcs-*", "--tls-allowed-nodes", "node-*", "--tls-allowed-clients", "app", "--tls-allowed-admins", "admin"}
	pcsFiles := map[string]pcstls.Files{}
	pc := startClusterWith(t, 3, func(p *proc) []string {
		f := pki.issue("pcs-" + p.name)
		pcsFiles[p.name] = f
		return append(tlsFlags(f), allow...)
	})
	app := pki.source("app")
	c, err := client.New(pc.endpoints(), client.WithTLS(app))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc.primary(c)

	nodeRoot := t.TempDir()
	var nodes []*nodeProc
	for i := range 3 {
		f := pki.issue(fmt.Sprintf("node-%d", i))
		n := &nodeProc{t: t, dir: filepath.Join(nodeRoot, fmt.Sprint("node", i)), addr: freeAddr(t),
			args: append([]string{"--endpoints", strings.Join(pc.endpoints(), ","), "--labels", fmt.Sprintf("zone=z%d", i),
				"--log-level", "warn", "--http-addr", freeAddr(t), "--tls-allowed-nodes", "node-*", "--tls-allowed-clients", "app"}, tlsFlags(f)...)}
		n.start()
		t.Cleanup(n.kill)
		nodes = append(nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Everything works for an allowed client.
	if _, err := c.Put(ctx, []byte("tls/a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if kv, err := c.Get(ctx, []byte("tls/a")); err != nil || string(kv.GetKv().GetValue()) != "1" {
		t.Fatalf("get: %v %v", kv, err)
	}
	var last uint64
	for range 100 {
		ts, err := c.GetTS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ts <= last {
			t.Fatalf("timestamp %d after %d", ts, last)
		}
		last = ts
	}
	waitFor(t, 30*time.Second, "three data nodes up over TLS", func() bool { return upNodes(ctx, c) == 3 })
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "t", Replicas: 3, IsolationLabel: "zone",
		Columns:   []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 3}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "t")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	rows := c.KV("t")
	for i := range 50 {
		if err := rows.Put(ctx, rowKey(i), []byte(fmt.Sprint("v", i))); err != nil {
			t.Fatalf("row put %d: %v", i, err)
		}
	}
	for i := range 50 {
		if v, found, err := rows.Get(ctx, rowKey(i)); err != nil || !found || string(v) != fmt.Sprint("v", i) {
			t.Fatalf("row get %d: %q %v %v", i, v, found, err)
		}
	}

	// Refusals, on every gRPC port: PCS members and data nodes.
	ourCA := x509.NewCertPool()
	ourCA.AddCert(pki.ca.Cert)
	bob := pki.issue("bob")
	stranger := other.issue("app") // the right name from the wrong CA
	refusals := []struct {
		name string
		cfg  *tls.Config
		code codes.Code
		msg  string
	}{
		{"no certificate", clientTLS(t, pcstls.Files{}, ourCA), codes.Unauthenticated, "no client certificate"},
		{"another CA", clientTLS(t, stranger, ourCA), codes.Unauthenticated, "unknown authority"},
		{"disallowed name", clientTLS(t, bob, ourCA), codes.PermissionDenied, "CN=bob"},
	}
	for _, r := range refusals {
		for _, p := range pc.procs {
			_, err := pcspb.NewPCSClient(rawTLSConn(t, p.client, r.cfg)).Status(ctx, &pcspb.StatusRequest{})
			if status.Code(err) != r.code || !strings.Contains(err.Error(), r.msg) {
				t.Errorf("%s at pcs %s: %v, want %v with %q", r.name, p.name, err, r.code, r.msg)
			}
		}
		for _, n := range nodes {
			_, err := pcspb.NewKVClient(rawTLSConn(t, n.addr, r.cfg)).Get(ctx, &pcspb.KVGetRequest{})
			if status.Code(err) != r.code || !strings.Contains(err.Error(), r.msg) {
				t.Errorf("%s at data node %s: %v, want %v with %q", r.name, n.addr, err, r.code, r.msg)
			}
		}
	}
	// Plaintext gets nowhere.
	if _, err := pcspb.NewPCSClient(plainConn(t, pc.procs[0].client)).Status(ctx, &pcspb.StatusRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext at pcs: %v", err)
	}
	// A client's certificate is not a data node's: it may not register, heartbeat or replicate.
	appCfg := clientTLS(t, pki.issue("app"), ourCA)
	if _, err := pcspb.NewPCSClient(rawTLSConn(t, pc.procs[0].client, appCfg)).RegisterNode(ctx, &pcspb.RegisterNodeRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("client registering as a data node: %v", err)
	}
	if _, err := pcspb.NewKVClient(rawTLSConn(t, nodes[0].addr, appCfg)).Replicate(ctx, &pcspb.ReplicateRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("client replicating to a data node: %v", err)
	}

	// HTTP: probes open, everything else needs an allowed certificate.
	httpGet := func(cfg *tls.Config, url string) (int, string) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, p := range pc.procs {
		base := "https://" + p.http
		if code, _ := httpGet(clientTLS(t, pcstls.Files{}, ourCA), base+"/health"); code != 200 {
			t.Errorf("%s /health without a certificate: %d", p.name, code)
		}
		for _, r := range []struct {
			cfg  *tls.Config
			code int
			msg  string
		}{{clientTLS(t, pcstls.Files{}, ourCA), 401, "no client certificate"}, {clientTLS(t, stranger, ourCA), 401, "unknown authority"},
			{clientTLS(t, bob, ourCA), 403, "CN=bob"}, {appCfg, 200, "pcs_raft_"}} {
			if code, body := httpGet(r.cfg, base+"/metrics"); code != r.code || !strings.Contains(body, r.msg) {
				t.Errorf("%s /metrics: %d %.200q, want %d with %q", p.name, code, body, r.code, r.msg)
			}
		}
	}

	// The console under TLS: every member serves a client its views (a follower forwards them
	// and proxies the heatmap to the primary, as itself); its actions need an admin.
	adminCfg := clientTLS(t, pki.issue("admin"), ourCA)
	for _, p := range pc.procs {
		base := "https://" + p.http
		for _, path := range []string{"/console/", "/console/api/nodes", "/console/api/heatmap", "/console/api/events"} {
			if code, body := httpGet(appCfg, base+path); code != 200 {
				t.Errorf("%s %s as a client: %d %.200s", p.name, path, code, body)
			}
		}
		for _, r := range []struct {
			cfg  *tls.Config
			code int
		}{{appCfg, 403}, {adminCfg, 200}} {
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.cfg}, Timeout: 10 * time.Second}
			req, _ := http.NewRequest("POST", base+"/console/api/admin/scheduler", strings.NewReader(`{"name": "hot", "paused": false}`))
			req.Header.Set("X-PCS-Console", "1")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != r.code {
				t.Errorf("%s console action: %d %.200s, want %d", p.name, resp.StatusCode, body, r.code)
			}
		}
	}

	// The Raft port: plaintext Raft fails, TLS needs a peer's certificate.
	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	var vote raft.RequestVoteResponse
	if err := trans.RequestVote("p1", raft.ServerAddress(pc.procs[0].peer), &raft.RequestVoteRequest{Term: 1 << 40}, &vote); err == nil {
		t.Fatal("a plaintext Raft request to a TLS member was answered")
	}
	// raftDial reports nil if the member kept the connection open for wait (it waits for the
	// cluster-id hello, for 5 s), or the error that ended it sooner.
	raftDial := func(f pcstls.Files, wait time.Duration) error {
		conn, err := tls.Dial("tcp", pc.procs[0].peer, clientTLS(t, f, ourCA))
		if err != nil {
			return err
		}
		defer conn.Close()
		// A refusal of the client's certificate arrives after the client's side of a TLS 1.3
		// handshake: read to see it.
		conn.SetReadDeadline(time.Now().Add(wait))
		_, err = conn.Read(make([]byte, 1))
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			return nil // accepted: the member waits for a Raft request
		}
		return err
	}
	if err := raftDial(pcsFiles["p2"], 500*time.Millisecond); err != nil {
		t.Errorf("a peer's TLS connection to the Raft port: %v", err)
	}
	if err := raftDial(pki.issue("app"), 4*time.Second); err == nil { // a refusal may be slow under load
		t.Error("a client's certificate was accepted at the Raft port")
	}

	// Rotation: p1's certificate is replaced on disk; the next connection presents the new one.
	serial := func() string {
		conn, err := tls.Dial("tcp", pc.procs[0].client, clientTLS(t, pki.issue("app"), ourCA))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	is, err := pki.ca.Issue("pcs-p1", []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pcstls.WriteFileAtomic(pcsFiles["p1"].Key, is.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pcstls.WriteFileAtomic(pcsFiles["p1"].Cert, is.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	want, _ := pemSerial(is.CertPEM)
	if after := serial(); after == before || after != want {
		t.Fatalf("after rotation p1 presents serial %s (before %s, new %s)", after, before, want)
	}
	if _, err := c.Put(ctx, []byte("tls/after-rotation"), []byte("1")); err != nil {
		t.Fatal(err)
	}
}

func plainConn(t *testing.T, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func pemSerial(certPEM []byte) (string, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return "", fmt.Errorf("not PEM")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", err
	}
	return cert.SerialNumber.String(), nil
}
