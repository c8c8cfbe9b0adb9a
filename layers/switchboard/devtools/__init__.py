"""Developer tooling: the local stack, the mock upstream provider and template helpers."""
