package client

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/google/btree"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
)

// routeCache caches, per table, its compiled partition spec and the shards looked up so far,
// ordered by start. A table's entry is dropped when the catalog watch reports a change to it;
// a shard is dropped when a caller reports it stale (InvalidateShard, e.g. on EpochNotMatch).
type routeCache struct {
	mu       sync.Mutex
	tables   map[string]*tableRoutes
	watching bool
}

type tableRoutes struct {
	table  *pcspb.Table
	spec   *catalog.Spec
	shards *btree.BTreeG[*pcspb.Shard]
}

func shardLess(a, b *pcspb.Shard) bool { return bytes.Compare(a.Start, b.Start) < 0 }

func (rc *routeCache) lookup(table string, rk []byte) *pcspb.Shard {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	tr := rc.tables[table]
	if tr == nil {
		return nil
	}
	var found *pcspb.Shard
	tr.shards.DescendLessOrEqual(&pcspb.Shard{Start: rk}, func(s *pcspb.Shard) bool { found = s; return false })
	if found == nil || (len(found.End) > 0 && bytes.Compare(rk, found.End) >= 0) {
		return nil
	}
	return found
}

// insert caches a shard, evicting cached shards it overlaps (they are older).
func (rc *routeCache) insert(table string, s *pcspb.Shard) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	tr := rc.tables[table]
	if tr == nil || tr.table.Id != s.TableId {
		return
	}
	var stale []*pcspb.Shard
	// The shard starting at or before s.Start may reach into s; then every shard starting
	// inside s overlaps it.
	tr.shards.DescendLessOrEqual(&pcspb.Shard{Start: s.Start}, func(o *pcspb.Shard) bool {
		if len(o.End) == 0 || bytes.Compare(o.End, s.Start) > 0 {
			stale = append(stale, o)
		}
		return false
	})
	tr.shards.AscendGreaterOrEqual(&pcspb.Shard{Start: s.Start}, func(o *pcspb.Shard) bool {
		if len(s.End) > 0 && bytes.Compare(o.Start, s.End) >= 0 {
			return false
		}
		stale = append(stale, o)
		return true
	})
	for _, o := range stale {
		tr.shards.Delete(o)
	}
	tr.shards.ReplaceOrInsert(s)
}

// Route returns the shard of table that holds a row key (the keyenc encoding of the table's
// key columns), from the client's cache when it can, asking PCS otherwise.
func (c *Client) Route(ctx context.Context, table string, key []byte) (*pcspb.Shard, error) {
	s, _, err := c.route(ctx, table, key)
	return s, err
}

// route returns the shard holding a row key and the key's routing key.
func (c *Client) route(ctx context.Context, table string, key []byte) (*pcspb.Shard, []byte, error) {
	tr, err := c.tableRoutes(ctx, table)
	if err != nil {
		return nil, nil, err
	}
	rk, err := tr.spec.RoutingKey(key)
	if err != nil {
		return nil, nil, errors.Join(ErrInvalidArgument, err)
	}
	if s := c.routes.lookup(table, rk); s != nil {
		return s, rk, nil
	}
	resp, err := c.GetShard(ctx, table, key, WithStale())
	if err != nil {
		return nil, nil, err
	}
	c.routes.insert(table, resp.Shard)
	return resp.Shard, rk, nil
}

// invalidateTable forgets a table's cached spec and routes.
func (c *Client) invalidateTable(table string) {
	c.routes.mu.Lock()
	defer c.routes.mu.Unlock()
	delete(c.routes.tables, table)
}

// InvalidateShard drops a cached shard (the node said its epoch or primary is stale).
func (c *Client) InvalidateShard(table string, s *pcspb.Shard) {
	c.routes.mu.Lock()
	defer c.routes.mu.Unlock()
	if tr := c.routes.tables[table]; tr != nil {
		tr.shards.Delete(s)
	}
}

func (c *Client) tableRoutes(ctx context.Context, table string) (*tableRoutes, error) {
	c.routes.mu.Lock()
	tr := c.routes.tables[table]
	startWatch := !c.routes.watching
	c.routes.watching = true
	c.routes.mu.Unlock()
	if startWatch {
		c.watchCatalog()
	}
	if tr != nil {
		return tr, nil
	}
	resp, err := c.GetTable(ctx, table, WithStale())
	if err != nil {
		return nil, err
	}
	schema, err := catalog.CompileSchema(resp.Table.Columns)
	if err != nil {
		return nil, errors.Join(ErrInternal, err)
	}
	spec, err := catalog.Compile(schema, resp.Table.Partition)
	if err != nil {
		return nil, errors.Join(ErrInternal, err)
	}
	tr = &tableRoutes{table: resp.Table, spec: spec, shards: btree.NewG(16, shardLess)}
	c.routes.mu.Lock()
	if cur := c.routes.tables[table]; cur != nil {
		tr = cur
	} else {
		c.routes.tables[table] = tr
	}
	c.routes.mu.Unlock()
	return tr, nil
}

// watchCatalog drops a table's cached routes whenever the catalog reports a change to it.
func (c *Client) watchCatalog() {
	ctx, cancel := context.WithCancel(context.Background())
	c.routes.mu.Lock()
	c.stopWatch = cancel
	c.routes.mu.Unlock()
	events := c.Watch(ctx, []byte(pcspb.CatalogPrefix), 0)
	go func() {
		for resp := range events {
			if resp.Err != nil {
				// The history moved past us: forget everything and start over.
				c.routes.mu.Lock()
				c.routes.tables = map[string]*tableRoutes{}
				c.routes.watching = false
				c.routes.mu.Unlock()
				return
			}
			c.routes.mu.Lock()
			for _, ev := range resp.Events {
				name := strings.TrimPrefix(string(ev.Kv.Key), pcspb.CatalogPrefix)
				if tr := c.routes.tables[name]; tr != nil {
					t := &pcspb.Table{}
					if ev.Type == pcspb.EventType_EVENT_TYPE_PUT && proto.Unmarshal(ev.Kv.Value, t) == nil && t.Id == tr.table.Id &&
						t.SchemaVersion == tr.table.SchemaVersion && proto.Equal(t.Partition, tr.table.Partition) &&
						t.GetPartitionJob().GetId() == tr.table.GetPartitionJob().GetId() {
						// State change only (creating → public): the routes still hold. A new
						// partition job (TRUNCATE replaces shards without changing the spec)
						// drops them.
						tr.table = t
						continue
					}
					delete(c.routes.tables, name)
				}
			}
			c.routes.mu.Unlock()
		}
	}()
}
