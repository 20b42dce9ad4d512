package server

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/raftgroup"
)

// snapshotChunk is the size of a SnapshotSave message.
const snapshotChunk = 1 << 20

func (v *service) SnapshotSave(req *pcspb.SnapshotSaveRequest, stream pcspb.PCS_SnapshotSaveServer) error {
	ctx := stream.Context()
	if !req.NoForward {
		cli, err := v.s.route(ctx, false)
		if err != nil {
			return toStatus(err)
		}
		if cli != nil {
			up, err := cli.SnapshotSave(ctx, &pcspb.SnapshotSaveRequest{NoForward: true})
			if err != nil {
				return err
			}
			for {
				c, err := up.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if err := stream.Send(c); err != nil {
					return err
				}
			}
		}
	}
	pr, pw := io.Pipe()
	posc := make(chan meta.Position, 1)
	go func() {
		pw.CloseWithError(v.s.fsm.WriteTo(pw, func(p meta.Position) { posc <- p }))
	}()
	defer pr.Close()
	buf := make([]byte, snapshotChunk)
	first := true
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			c := &pcspb.SnapshotChunk{Data: append([]byte(nil), buf[:n]...)}
			if first {
				first = false
				pos := <-posc
				c.Revision, c.AppliedIndex = pos.Revision, pos.AppliedIndex
			}
			if serr := stream.Send(c); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return toStatus(err)
		}
	}
}

// Restore prepares dataDir to start a new one-member cluster (name, peerAddr) holding the
// state of the snapshot file (from `pcsctl snapshot save`): the file is verified whole, then
// installed as the first Raft snapshot; the new cluster gets a new cluster id. Start pcs on
// dataDir with the same name and peer address; add members with --join.
func Restore(file, dataDir, name, peerAddr string) (meta.Position, error) {
	f, err := os.Open(file)
	if err != nil {
		return meta.Position{}, err
	}
	defer f.Close()
	pos, err := meta.VerifySnapshot(bufio.NewReader(f))
	if err != nil {
		return pos, fmt.Errorf("%s: %w", file, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return pos, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return pos, err
	}
	ident, err := raftgroup.OpenIdentity(dataDir)
	if err != nil {
		return pos, err
	}
	if ident.ID() != 0 {
		return pos, fmt.Errorf("%s belongs to cluster %s already; restore into an empty directory", dataDir, raftgroup.FormatClusterID(ident.ID()))
	}
	if err := raftgroup.InitFromSnapshot(dataDir, name, peerAddr, pos.AppliedIndex, f); err != nil {
		return pos, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return pos, ident.Adopt(max(binary.BigEndian.Uint64(b[:]), 1))
}
