"""What every CLI shares: logging set-up and the exit-code contract (0 ok, 1 handled error, 2 usage)."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output; tracebacks on error")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)


def run_main(body: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Run a CLI body; turn expected errors into one line on stderr and exit code 1.

    Tracebacks are shown only with -v. Unexpected errors (bugs) keep their traceback.
    """
    from age2hie_hub.errors import Age2HieError

    try:
        return body(args)
    except (Age2HieError, FileNotFoundError, PermissionError, IsADirectoryError, ValueError) as exc:
        if getattr(args, "verbose", 0):
            logging.getLogger(prog).exception("failed")
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
