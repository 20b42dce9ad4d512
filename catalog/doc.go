// Package catalog is PCS's pure model of tables: schemas, partition specs and the byte ranges
// they become. It does no I/O.
//
// Routing keys. A table's rows are addressed by their key: the keyenc encoding of the key
// columns. A partition spec (one level, or two with sub-partitioning; RANGE, LIST or HASH at
// each) sends every key to exactly one leaf partition. The routing key of a row is the leaf's
// index, 4 bytes big-endian, followed by the row's key; leaf i therefore owns the contiguous
// byte range [be32(i), be32(i+1)), the leaves of a table tile [be32(0), be32(n)) with no gap
// and no overlap, and within a leaf rows keep key order. An unpartitioned table has one leaf.
package catalog
