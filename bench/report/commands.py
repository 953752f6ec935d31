"""Subcommands of this feature (registered by bench.cli)."""


def register(subparsers) -> None:
    pass
