"""Leaf compute ops: one folder per op with an eager reference and fast backends (none yet)."""
