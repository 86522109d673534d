"""Placeholder registration until the benchmark lands."""


def add_parser(subparsers) -> None:
    pass
