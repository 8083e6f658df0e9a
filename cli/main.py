"""The ``qmoe`` command: a Typer app whose commands parse, call one library function, render.

Errors: a :class:`qmoe.errors.QmoeError` (or a usage error) is printed as one line on stderr
with exit code 1 (usage: 2) and no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from qmoe.errors import QmoeError

app = typer.Typer(
    name="qmoe",
    help="Curiosity-driven quantized mixture-of-experts experiments, run as Ray Tune sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    # Each module adds its commands to `app`; imported here so `cli.main` is the one entry.
    from cli import data_cmd, export_cmd, trial_cmd  # noqa: F401

    for optional in ("cli.sweep_cmd", "cli.report_cmd", "cli.bench_cmd", "cli.tune_cmd"):
        try:
            __import__(optional)
        except ModuleNotFoundError as err:
            if err.name != optional:
                raise


def _fail(message: str, code: int) -> int:
    first = " ".join(str(message).split()) or "failed"
    print(f"qmoe: error: {first}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    _register_commands()
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


if __name__ == "__main__":
    # `python -m cli.main`: run the `cli.main` module instance, the one commands register on.
    from cli.main import main as _main

    sys.exit(_main())
