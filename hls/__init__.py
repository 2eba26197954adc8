"""hls4ml generation of the exit blocks (SSA head, gate, comparator)."""
