"""Subcommands of ``fcnclassify``: one module each, found by :func:`fcnclassify.cli.build_parser`."""
