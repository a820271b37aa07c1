"""CLI adapters, one module per family of subcommands: flags in, a config dataclass out, one library call."""
