"""Developer tooling: the local stack, the mock upstream provider, template helpers and AWS fault injection."""
