package raftgroup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/postdb/pcs/durable"
)

// ErrClusterMismatch: a peer belongs to another cluster.
var ErrClusterMismatch = errors.New("raftgroup: peer belongs to another cluster")

// clusterIDFile holds the cluster id in the data directory.
const clusterIDFile = "cluster-id"

// Identity is the id of the cluster a member belongs to, persisted in its data directory. 0
// means not known yet: a new member that joins learns the id from the first peer that contacts
// it and keeps it from then on.
type Identity struct {
	dir string
	id  atomic.Uint64
	mu  sync.Mutex // serialises adoption
}

// OpenIdentity reads the cluster id persisted in dir (0 if none).
func OpenIdentity(dir string) (*Identity, error) {
	ident := &Identity{dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, clusterIDFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return ident, nil
	case err != nil:
		return nil, fmt.Errorf("raftgroup: reading cluster id: %w", err)
	}
	id, err := ParseClusterID(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("raftgroup: %s: %w", filepath.Join(dir, clusterIDFile), err)
	}
	ident.id.Store(id)
	return ident, nil
}

// ParseClusterID parses the 16 hex digits of a cluster id.
func ParseClusterID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 16, 64)
	if err != nil || id == 0 || len(s) != 16 {
		return 0, fmt.Errorf("cluster id %q: want 16 hex digits, not all zero", s)
	}
	return id, nil
}

// FormatClusterID renders a cluster id as 16 hex digits ("" for 0).
func FormatClusterID(id uint64) string {
	if id == 0 {
		return ""
	}
	return fmt.Sprintf("%016x", id)
}

// ID returns the cluster id, 0 if not known yet.
func (i *Identity) ID() uint64 { return i.id.Load() }

// Adopt records id as this member's cluster id if it has none yet, durably; it fails if the
// member belongs to another cluster.
func (i *Identity) Adopt(id uint64) error {
	if id == 0 {
		return nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	switch cur := i.id.Load(); {
	case cur == id:
		return nil
	case cur != 0:
		return fmt.Errorf("%w: this member is of cluster %s, the peer of cluster %s", ErrClusterMismatch, FormatClusterID(cur), FormatClusterID(id))
	}
	if err := os.MkdirAll(i.dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(i.dir, clusterIDFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("raftgroup: writing cluster id: %w", err)
	}
	_, err = f.WriteString(FormatClusterID(id) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = durable.Rename(tmp, filepath.Join(i.dir, clusterIDFile))
	}
	if err != nil {
		return fmt.Errorf("raftgroup: writing cluster id: %w", err)
	}
	i.id.Store(id)
	return nil
}

// The handshake every Raft connection opens with: magic, then the sender's cluster id.
var handshakeMagic = [8]byte{'P', 'C', 'S', 'R', 'A', 'F', 'T', 1}

const handshakeLen = 16

func (i *Identity) hello() []byte {
	b := make([]byte, 0, handshakeLen)
	b = append(b, handshakeMagic[:]...)
	return binary.BigEndian.AppendUint64(b, i.ID())
}

// check reads the peer's hello and verifies (or adopts) its cluster id.
func (i *Identity) check(r io.Reader, peer string) error {
	var b [handshakeLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("raftgroup: handshake with %s: %w", peer, err)
	}
	if !bytes.Equal(b[:8], handshakeMagic[:]) {
		return fmt.Errorf("raftgroup: handshake with %s: not a PCS peer (or another protocol version)", peer)
	}
	theirs := binary.BigEndian.Uint64(b[8:])
	if theirs == 0 {
		return nil // a member that has not learnt the id yet: it adopts ours
	}
	if err := i.Adopt(theirs); err != nil {
		return fmt.Errorf("peer %s: %w", peer, err)
	}
	return nil
}

// idConn runs the handshake before the first byte of Raft traffic in either direction.
type idConn struct {
	net.Conn
	ident  *Identity
	dialer bool
	once   sync.Once
	err    error
	onFail func(error)
}

func (c *idConn) handshake() error {
	c.once.Do(func() {
		_ = c.Conn.SetDeadline(time.Now().Add(5 * time.Second))
		defer c.Conn.SetDeadline(time.Time{})
		peer := c.Conn.RemoteAddr().String()
		if c.dialer {
			if _, c.err = c.Conn.Write(c.ident.hello()); c.err == nil {
				c.err = c.ident.check(c.Conn, peer)
			}
		} else {
			if c.err = c.ident.check(c.Conn, peer); c.err == nil {
				_, c.err = c.Conn.Write(c.ident.hello())
			}
		}
		if c.err != nil {
			if c.onFail != nil {
				c.onFail(c.err)
			}
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *idConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// idStream is the Raft stream layer with the cluster handshake.
type idStream struct {
	raft.StreamLayer
	ident  *Identity
	onFail func(error)
}

func (s *idStream) Accept() (net.Conn, error) {
	c, err := s.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &idConn{Conn: c, ident: s.ident, onFail: s.onFail}, nil
}

func (s *idStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	ic := &idConn{Conn: c, ident: s.ident, dialer: true, onFail: s.onFail}
	if err := ic.handshake(); err != nil {
		return nil, err
	}
	return ic, nil
}

// InitFromSnapshot prepares an empty data directory to start a new one-member group (name at
// peerAddr) from an FSM snapshot taken at index: the snapshot is installed as the group's first
// Raft snapshot, with a configuration of this member alone. The directory must hold no Raft
// state.
func InitFromSnapshot(dir, name, peerAddr string, index uint64, data io.Reader) error {
	if has, err := HasState(dir); err != nil {
		return err
	} else if has {
		return fmt.Errorf("raftgroup: %s already holds Raft state; restore into an empty directory", dir)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	if err != nil {
		return fmt.Errorf("raftgroup: opening snapshots: %w", err)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(peerAddr))
	defer trans.Close()
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(name), Address: raft.ServerAddress(peerAddr)}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, max(index, 1), 1, conf, max(index, 1), trans)
	if err != nil {
		return fmt.Errorf("raftgroup: creating the snapshot: %w", err)
	}
	if _, err := io.Copy(sink, data); err != nil {
		sink.Cancel()
		return fmt.Errorf("raftgroup: writing the snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return err
	}
	// The log starts empty at the snapshot's term.
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return err
	}
	logs, meta, err := openWAL(walDir, DefaultConfig().SegmentSize)
	if err != nil {
		return err
	}
	defer func() { logs.Close(); meta.Close() }()
	return logs.SetUint64([]byte("CurrentTerm"), 1)
}
