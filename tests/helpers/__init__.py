"""Shared test helpers: deterministic keys, genesis files and blocks built the way a node builds them."""
