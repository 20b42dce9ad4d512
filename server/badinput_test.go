package server

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/meta"
)

// rawCodec sends bytes as they are, to put malformed messages on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

var _ encoding.Codec = rawCodec{}

func TestBadInputChangesNothing(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	c := tc.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.Put(ctx, []byte("keep"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	tc.waitConverged(10 * time.Second)
	p := tc.primary()
	_, posBefore := p.FSM().Digest()

	big := bytes.Repeat([]byte("x"), meta.MaxValueSize+1)
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"oversize key", func() error { _, err := c.Put(ctx, bytes.Repeat([]byte("k"), meta.MaxKeySize+1), nil); return err }, client.ErrInvalidArgument},
		{"oversize value", func() error { _, err := c.Put(ctx, []byte("k"), big); return err }, client.ErrInvalidArgument},
		{"empty key", func() error { _, err := c.Put(ctx, nil, []byte("v")); return err }, client.ErrInvalidArgument},
		{"empty key delete", func() error { _, err := c.Delete(ctx, nil); return err }, client.ErrInvalidArgument},
		{"cas mismatch", func() error {
			_, err := c.Put(ctx, []byte("keep"), []byte("w"), client.WithExpectedVersion(7))
			return err
		}, client.ErrVersionMismatch},
		{"cas create of existing", func() error {
			_, err := c.Put(ctx, []byte("keep"), []byte("w"), client.WithExpectedVersion(0))
			return err
		}, client.ErrVersionMismatch},
		{"conditional delete mismatch", func() error {
			_, err := c.Delete(ctx, []byte("keep"), client.WithExpectedVersion(9))
			return err
		}, client.ErrVersionMismatch},
		{"id kind empty", func() error { _, err := c.AllocIDs(ctx, "", 1); return err }, client.ErrInvalidArgument},
		{"id count zero", func() error { _, err := c.AllocIDs(ctx, "table", 0); return err }, client.ErrInvalidArgument},
		{"tso count too large", func() error {
			_, err := pcspb.NewPCSClient(mustConn(t, p.ClientAddr())).Tso(ctx)
			if err != nil {
				return err
			}
			s, _ := pcspb.NewPCSClient(mustConn(t, p.ClientAddr())).Tso(ctx)
			s.Send(&pcspb.TsoRequest{Count: 1 << 19})
			_, err = s.Recv()
			return client.MapError(err)
		}, client.ErrInvalidArgument},
		{"range limit", func() error { _, err := c.Range(ctx, nil, client.WithLimit(maxRange+1)); return err }, client.ErrInvalidArgument},
		{"unknown consistency", func() error {
			_, err := pcspb.NewPCSClient(mustConn(t, p.ClientAddr())).Get(ctx, &pcspb.GetRequest{Key: []byte("keep"), Consistency: 9})
			return client.MapError(err)
		}, client.ErrInvalidArgument},
		{"bad log level", func() error { return c.SetLogLevel(ctx, p.ClientAddr(), "loud") }, client.ErrInvalidArgument},
		{"member with no address", func() error { _, err := c.MemberAdd(ctx, "x", "", false, false); return err }, client.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	// Malformed protobuf on the wire: refused by the server, nothing applied.
	cc := mustConn(t, p.ClientAddr())
	var out []byte
	err := cc.Invoke(ctx, "/pcs.v1.PCS/Put", []byte{0xff, 0xff, 0xff, 0x0f, 0x01}, &out, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.Internal || err == nil {
		t.Fatalf("malformed put: %v, want an unmarshal error", err)
	}
	// Oversize message: refused by the transport limit.
	huge := make([]byte, maxMsgSize+1)
	err = cc.Invoke(ctx, "/pcs.v1.PCS/Put", huge, &out, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversize message: %v, want ResourceExhausted", err)
	}

	tc.waitConverged(10 * time.Second)
	_, posAfter := p.FSM().Digest()
	// Refused requests that reached Raft (the compare-and-swaps) advance only the revision;
	// the data is unchanged, so compare the key itself and the key count.
	kv, _ := p.FSM().Get([]byte("keep"))
	if kv == nil || string(kv.Value) != "v" || kv.Version != 1 {
		t.Fatalf("refused writes changed the key: %v", kv)
	}
	if kvs, _, _ := p.FSM().Range(nil, nil, 100); len(kvs) != 1 {
		t.Fatalf("refused writes added keys: %v", kvs)
	}
	// No key-value event since: the refused writes changed no key. (The revision itself rises
	// with every applied command, refused compare-and-swaps and TSO window renewals included.)
	if evs, _, err := p.FSM().Events(posBefore.Revision+1, nil, 100); err != nil || len(evs) != 0 {
		t.Fatalf("events after bad input: %v %v", evs, err)
	}
	if posAfter.Revision < posBefore.Revision {
		t.Fatalf("revision went back")
	}
}
