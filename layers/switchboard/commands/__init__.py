"""CLI subcommands that live in their own modules; ``switchboard.cli`` registers each with one line."""
