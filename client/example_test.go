package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// An application creates a table, waits for it to be public, and writes and reads rows by
// their typed key values.
func Example() {
	dir, err := os.MkdirTemp("", "pcs-example-")
	if err != nil {
		log.Fatal(err)
	}
	endpoint, stop, err := startCluster(dir) // one PCS and three data nodes, for the example
	if err != nil {
		log.Fatal(err)
	}
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New([]string{endpoint})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// A table keyed by (user int64, name string), hashed into 4 shards of 3 replicas each.
	_, err = c.CreateTable(ctx, &pcspb.Table{Name: "users", Replicas: 3,
		Columns:   []*pcspb.ColumnDef{{Name: "user", Type: "int64"}, {Name: "name", Type: "string"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"user"}, HashPartitions: 4}})
	if err != nil {
		log.Fatal(err)
	}
	for {
		t, err := c.GetTable(ctx, "users")
		if err == nil && t.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Row keys are the order-preserving encoding of the key columns.
	cols := []keyenc.Column{{Type: keyenc.Int64}, {Type: keyenc.String}}
	key := func(user int64, name string) []byte {
		k, err := keyenc.Encode(nil, cols, []keyenc.Value{keyenc.I64(user), keyenc.Str(name)})
		if err != nil {
			log.Fatal(err)
		}
		return k
	}
	users := c.KV("users")
	for i, name := range []string{"ada", "grace", "edsger"} {
		if err := users.Put(ctx, key(int64(i+1), name), []byte("hello, "+name)); err != nil {
			log.Fatal(err)
		}
	}
	v, found, err := users.Get(ctx, key(2, "grace"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, string(v))
	_, found, err = users.Get(ctx, key(2, "nobody"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found)
	// Output:
	// true hello, grace
	// false
}
