"""One module per ``faststyle`` subcommand, each with ``register(subparsers)``."""
