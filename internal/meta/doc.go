// Package meta is PCS's deterministic metadata state machine: the FSM that every PCS node feeds
// with the committed entries of the Raft log (the PCS WAL).
//
// Contract:
//   - Commands are versioned protobuf messages (pcspb.Command). Apply decodes and validates a
//     command and applies it deterministically: the same log gives the same state, revision and
//     digest on every node. A command that is malformed, of an unknown version or that fails its
//     condition (compare-and-swap) changes nothing but the revision and returns an error result.
//   - The cluster revision rises by one with every applied command.
//   - The key-value namespace keeps a bounded history of events so that a watch can resume from
//     any retained revision on any node.
//   - Snapshot captures the state in O(1) (copy-on-write trees) and streams it; Restore reads a
//     whole snapshot and verifies it before it replaces anything, so a corrupt or truncated
//     snapshot is an error and leaves the state as it was.
//   - Reads are safe concurrently with Apply.
package meta
