package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// OpOption modifies one call.
type OpOption func(*opOptions)

type opOptions struct {
	expected    *uint64
	consistency pcspb.Consistency
	endpoint    string
	limit       uint32
	after       []byte
	keysOnly    bool
	stats       bool
	rowRead     pcspb.ReadConsistency
	maxStale    time.Duration
	readFrom    string
	staleness   *time.Duration
}

func collect(opts []OpOption) opOptions {
	var o opOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithFollowerRead lets a replica of the row's shard serve a row read (TableKV.Get),
// linearizably: the replica reads exactly the state at the primary's position when the read
// arrived.
func WithFollowerRead() OpOption {
	return func(o *opOptions) { o.rowRead = pcspb.ReadConsistency_READ_CONSISTENCY_FOLLOWER }
}

// WithStaleRead lets a replica serve a row read from a state at most maxStaleness old (it asks
// the primary only if its latest known state is older).
func WithStaleRead(maxStaleness time.Duration) OpOption {
	return func(o *opOptions) { o.rowRead, o.maxStale = pcspb.ReadConsistency_READ_CONSISTENCY_STALE, maxStaleness }
}

// WithReadFrom prefers, for a follower or stale row read, a replica on a node whose zone
// label is zone.
func WithReadFrom(zone string) OpOption { return func(o *opOptions) { o.readFrom = zone } }

// WithStaleness receives how old the state a replica read may have been (0: current).
func WithStaleness(d *time.Duration) OpOption { return func(o *opOptions) { o.staleness = d } }

// WithExpectedVersion makes a put or delete a compare-and-swap: it applies only if the key's
// version is v (0: the key must not exist); otherwise it fails with ErrVersionMismatch.
func WithExpectedVersion(v uint64) OpOption { return func(o *opOptions) { o.expected = &v } }

// WithStale reads the local state of the serving node instead of a linearizable read.
func WithStale() OpOption {
	return func(o *opOptions) { o.consistency = pcspb.Consistency_CONSISTENCY_STALE }
}

// WithConsistency sets the read consistency.
func WithConsistency(c pcspb.Consistency) OpOption { return func(o *opOptions) { o.consistency = c } }

// WithEndpoint serves a read at this node (a client address) instead of the primary. Writes
// sent there are forwarded to the primary.
func WithEndpoint(addr string) OpOption { return func(o *opOptions) { o.endpoint = addr } }

// WithStats makes ScanShards also return each shard's load (size, rates, replica positions).
func WithStats() OpOption { return func(o *opOptions) { o.stats = true } }

// WithLimit bounds a range.
func WithLimit(n uint32) OpOption { return func(o *opOptions) { o.limit = n } }

// WithAfter starts a range after this key (paging).
func WithAfter(key []byte) OpOption { return func(o *opOptions) { o.after = key } }

// WithKeysOnly omits values from a range.
func WithKeysOnly() OpOption { return func(o *opOptions) { o.keysOnly = true } }

// Put writes a key of the system namespace.
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...OpOption) (*pcspb.PutResponse, error) {
	o := collect(opts)
	req := &pcspb.PutRequest{Key: key, Value: value, ExpectedVersion: o.expected, NoForward: o.endpoint == ""}
	var resp *pcspb.PutResponse
	err := c.do(ctx, target{endpoint: o.endpoint, write: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.Put(ctx, req)
		return err
	})
	return resp, err
}

// Delete removes a key; the response says whether it existed.
func (c *Client) Delete(ctx context.Context, key []byte, opts ...OpOption) (*pcspb.DeleteResponse, error) {
	o := collect(opts)
	req := &pcspb.DeleteRequest{Key: key, ExpectedVersion: o.expected, NoForward: o.endpoint == ""}
	var resp *pcspb.DeleteResponse
	err := c.do(ctx, target{endpoint: o.endpoint, write: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.Delete(ctx, req)
		return err
	})
	return resp, err
}

// Get reads a key; resp.Kv is nil if it does not exist.
func (c *Client) Get(ctx context.Context, key []byte, opts ...OpOption) (*pcspb.GetResponse, error) {
	o := collect(opts)
	req := &pcspb.GetRequest{Key: key, Consistency: o.consistency}
	var resp *pcspb.GetResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.Get(ctx, req)
		return err
	})
	return resp, err
}

// Range lists keys with a prefix in key order.
func (c *Client) Range(ctx context.Context, prefix []byte, opts ...OpOption) (*pcspb.RangeResponse, error) {
	o := collect(opts)
	req := &pcspb.RangeRequest{Prefix: prefix, After: o.after, Limit: o.limit, Consistency: o.consistency, KeysOnly: o.keysOnly}
	var resp *pcspb.RangeResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.Range(ctx, req)
		return err
	})
	return resp, err
}

// AllocIDs reserves count ids of kind and returns the first; the ids are first..first+count-1.
func (c *Client) AllocIDs(ctx context.Context, kind string, count uint32) (uint64, error) {
	req := &pcspb.AllocIDsRequest{Kind: kind, Count: count, NoForward: true}
	var resp *pcspb.AllocIDsResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.AllocIDs(ctx, req)
		return err
	})
	if err != nil {
		return 0, err
	}
	return resp.First, nil
}

// Status asks one node (a client address; "" for the primary) for its status.
func (c *Client) Status(ctx context.Context, endpoint string, withDigest bool) (*pcspb.StatusResponse, error) {
	var resp *pcspb.StatusResponse
	err := c.do(ctx, target{endpoint: endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.Status(ctx, &pcspb.StatusRequest{WithDigest: withDigest})
		return err
	})
	return resp, err
}

// MemberList lists the members.
func (c *Client) MemberList(ctx context.Context, opts ...OpOption) (*pcspb.MemberListResponse, error) {
	o := collect(opts)
	var resp *pcspb.MemberListResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.MemberList(ctx, &pcspb.MemberListRequest{Consistency: o.consistency})
		return err
	})
	return resp, err
}

// MemberAdd adds a member by name and peer (Raft) address: as a non-voter, promoted to voter
// (unless nonVoter) once it has caught up within ctx; resp.PromotionPending says it has not.
// force skips the quorum check of the promotion.
func (c *Client) MemberAdd(ctx context.Context, name, peerAddr string, nonVoter, force bool) (*pcspb.MemberAddResponse, error) {
	var resp *pcspb.MemberAddResponse
	err := c.do(ctx, target{long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.MemberAdd(ctx, &pcspb.MemberAddRequest{Name: name, PeerAddr: peerAddr, NonVoter: nonVoter, NoForward: true, Force: force})
		return err
	})
	return resp, err
}

// MemberPromote makes a caught-up non-voter a voter.
func (c *Client) MemberPromote(ctx context.Context, name string, force bool) (*pcspb.MemberPromoteResponse, error) {
	var resp *pcspb.MemberPromoteResponse
	err := c.do(ctx, target{long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.MemberPromote(ctx, &pcspb.MemberPromoteRequest{Name: name, NoForward: true, Force: force})
		return err
	})
	return resp, err
}

// MemberRemove removes a member; refused (ErrQuorumAtRisk) if the live voters left would not
// form a quorum, unless force.
func (c *Client) MemberRemove(ctx context.Context, name string, force bool) (*pcspb.MemberRemoveResponse, error) {
	var resp *pcspb.MemberRemoveResponse
	err := c.do(ctx, target{long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.MemberRemove(ctx, &pcspb.MemberRemoveRequest{Name: name, NoForward: true, Force: force})
		return err
	})
	return resp, err
}

// MemberTransfer moves the primary role to name ("" lets the primary choose) and returns the
// new primary's name.
func (c *Client) MemberTransfer(ctx context.Context, name string) (string, error) {
	var resp *pcspb.MemberTransferResponse
	err := c.do(ctx, target{long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.MemberTransfer(ctx, &pcspb.MemberTransferRequest{Name: name, NoForward: true})
		return err
	})
	if err != nil {
		return "", err
	}
	c.setPrimary("")
	return resp.PrimaryName, nil
}

// GetLogLevel returns a node's log level.
func (c *Client) GetLogLevel(ctx context.Context, endpoint string) (string, error) {
	var resp *pcspb.GetLogLevelResponse
	err := c.do(ctx, target{endpoint: endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.GetLogLevel(ctx, &pcspb.GetLogLevelRequest{})
		return err
	})
	if err != nil {
		return "", err
	}
	return resp.Level, nil
}

// SetLogLevel changes a node's log level at runtime.
func (c *Client) SetLogLevel(ctx context.Context, endpoint, level string) error {
	return c.do(ctx, target{endpoint: endpoint}, func(ctx context.Context, cli pcspb.PCSClient) error {
		_, err := cli.SetLogLevel(ctx, &pcspb.SetLogLevelRequest{Level: level})
		return err
	})
}

// SetNodeConfig sets (value "": unsets) a data node setting on the listed nodes, or on every
// node, also those registered later (nodes empty); PCS carries it to the nodes. It returns
// each node's desired and applied settings.
func (c *Client) SetNodeConfig(ctx context.Context, nodes []uint64, key, value string) ([]*pcspb.NodeConfigInfo, error) {
	var resp *pcspb.NodeConfigResponse
	err := c.do(ctx, target{write: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.SetNodeConfig(ctx, &pcspb.SetNodeConfigRequest{Nodes: nodes, Key: key, Value: value})
		return err
	})
	return resp.GetNodes(), err
}

// GetNodeConfig returns the listed nodes' (empty: every node's) desired settings and those each
// reports in force.
func (c *Client) GetNodeConfig(ctx context.Context, nodes ...uint64) ([]*pcspb.NodeConfigInfo, error) {
	var resp *pcspb.NodeConfigResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.GetNodeConfig(ctx, &pcspb.GetNodeConfigRequest{Nodes: nodes})
		return err
	})
	return resp.GetNodes(), err
}

// SnapshotSave returns a snapshot of the metadata state (the primary's; endpoint "" — or one
// node's, possibly stale) and the revision it was taken at. `pcs restore` starts a new cluster
// from it.
func (c *Client) SnapshotSave(ctx context.Context, endpoint string) (data []byte, revision uint64, err error) {
	err = c.do(ctx, target{endpoint: endpoint, long: true}, func(ctx context.Context, cli pcspb.PCSClient) error {
		stream, err := cli.SnapshotSave(ctx, &pcspb.SnapshotSaveRequest{NoForward: endpoint != ""})
		if err != nil {
			return err
		}
		var buf []byte
		for first := true; ; first = false {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				if first {
					return fmt.Errorf("%w: empty snapshot", ErrInternal)
				}
				data = buf
				return nil
			}
			if err != nil {
				return err
			}
			if first {
				revision = chunk.Revision
			}
			buf = append(buf, chunk.Data...)
		}
	})
	return data, revision, err
}
