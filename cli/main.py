"""The ``qmoe`` command: a Typer app whose commands parse, call one library function, render.

Every command is registered here, in one place (:func:`build_app`); the command modules only
define them. Errors: a :class:`qmoe.errors.QmoeError` (or a usage error) is printed as one line
on stderr with exit code 1 (usage: 2) and no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from qmoe.cli import bench_cmd, data_cmd, export_cmd, report_cmd, sweep_cmd, trial_cmd, tune_cmd
from qmoe.errors import QmoeError, one_line

_state = {"debug": False}


def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def build_app() -> typer.Typer:
    """The ``qmoe`` app with every command."""
    app = typer.Typer(
        name="qmoe",
        help="Curiosity-driven quantized mixture-of-experts experiments, run as Ray Tune sweeps.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    app.add_typer(data_cmd.data_app, name="data")
    app.command()(trial_cmd.trial)
    app.add_typer(sweep_cmd.sweep_app, name="sweep")
    app.command()(sweep_cmd.resume)
    app.command()(sweep_cmd.status)
    app.command()(report_cmd.report)
    app.command()(bench_cmd.bench)
    app.command()(tune_cmd.tune)
    app.command()(export_cmd.export)
    app.command()(export_cmd.predict)
    return app


app = build_app()


def _fail(message: str, code: int) -> int:
    print(f"qmoe: error: {one_line(message, limit=None) or 'failed'}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    try:
        # Without standalone mode, click returns a command's `raise typer.Exit(n)` as n.
        code = app(args=args, prog_name="qmoe", standalone_mode=False)
        if isinstance(code, int) and code:
            return code
    except typer.Exit as err:
        return int(getattr(err, "exit_code", 0) or 0)
    except typer.Abort:
        return _fail("aborted", 130)
    except typer.TyperException as err:  # typer's (vendored click) usage and parameter errors
        code = int(getattr(err, "exit_code", 2) or 2)
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None and code == 2 else ""
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        return _fail(f"{message}{hint}", code)
    except QmoeError as err:
        if _state["debug"]:
            raise
        return _fail(str(err), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as err:  # the boundary: one line unless --debug
        if _state["debug"]:
            raise
        return _fail(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", 1)
    return 0


if __name__ == "__main__":  # python -m qmoe.cli.main
    sys.exit(main())
