"""One module per `dnadiff` sub-command; each defines ``add_arguments(parser)`` and ``run(args) -> int``."""
