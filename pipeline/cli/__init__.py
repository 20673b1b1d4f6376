"""The ``ferroflow`` command line: ``parser`` builds the arguments, ``commands`` runs
them over the application layer (``pipeline.app``), ``format`` prints the results.

Exit codes: 0 success; 1 error (one line on stderr; ``--debug`` for the traceback);
2 usage error; 3 finished, but some input was quarantined or some fits were flagged.
"""

from __future__ import annotations

import re
import signal
import sys

from ..errors import InputError, WorkerLost
from ..rawfiles import shown
from .commands import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UsageError
from .parser import build_parser
from .supervise import is_supervised, supervise

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_PARTIAL"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _terminate_cleanly()
    try:
        if args.command == "run" and not is_supervised():
            return supervise(args.argv, Terminated)  # Prefect's processes die with the command
        return args.func(args)
    except UsageError as exc:
        print(f"ferroflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyError as exc:
        if args.debug:
            raise
        print(f"ferroflow {args.command}: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_ERROR
    except (InputError, ValueError, WorkerLost) as exc:
        if args.debug:
            raise
        print(f"ferroflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # the file system said no: which file, and why
        if args.debug:
            raise
        where = f": {shown(exc.filename)}" if exc.filename else ""
        print(f"ferroflow {args.command}: error: {one_line(exc.strerror or str(exc))}{where}",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Terminated as exc:
        print(f"ferroflow {args.command}: stopped by signal {exc.args[0]}", file=sys.stderr)
        return 128 + exc.args[0]
    except Exception as exc:  # unexpected: still one line, the traceback on request
        if args.debug:
            raise
        text = one_line(str(exc))
        print(f"ferroflow {args.command}: error: {type(exc).__name__}: {text} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR


class Terminated(BaseException):
    """SIGTERM/SIGHUP as an exception, so that ``finally`` blocks and context managers
    (temp files, locks, process pools) clean up as for Ctrl-C."""


def _terminate_cleanly() -> None:
    received = []

    def stop(signum, frame):
        if received:  # stopping already (Prefect sends itself the signal again): let the
            return    # clean-up finish; SIGKILL remains for the impatient
        received.append(signum)
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, stop)
        except (ValueError, OSError):  # not the main thread: leave the default
            pass


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: str) -> str:
    """A library's message (some span lines and carry terminal colours) as one line."""
    return " ".join(_ANSI.sub("", text).split())
