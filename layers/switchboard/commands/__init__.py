"""CLI command implementations, one module per area; ``switchboard.cli`` only registers them."""
