package server

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

func mustConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func notPrimaryDetail(err error) *pcspb.NotPrimary {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if np, ok := d.(*pcspb.NotPrimary); ok {
			return np
		}
	}
	return nil
}

// fromStatusForTest maps a raw gRPC error the way the client does.
func fromStatusForTest(err error) error { return client.MapError(err) }
