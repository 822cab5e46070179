"""Routing as pure functions over immutable snapshots. No I/O, no gRPC, no server imports."""
