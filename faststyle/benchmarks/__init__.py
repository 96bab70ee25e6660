"""One module per ``faststyle bench`` target, each with ``add_arguments(parser)`` and ``run(args) -> dict``."""
