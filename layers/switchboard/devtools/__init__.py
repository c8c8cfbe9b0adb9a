"""Developer tooling: the local stack, the mock upstream, template helpers and AWS fault injection."""
