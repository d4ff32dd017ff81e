"""How the CLI says what went wrong: click's usage errors as one sentence, the cause chain for --debug.

Exit codes: 0 success, 1 a gate failed, 2 bad usage or bad input (one sentence on stderr),
3 an internal error or a crashed worker (a bug: please report it with the --debug output).
"""
from __future__ import annotations

import traceback

import click

REPORT_IT = "please report it with the output of the same command run with --debug"
# click 8.2+ shows the help when `edgeslim` is given nothing: that stays as click prints it.
SHOWS_HELP = tuple(c for c in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if c)
NO_SUCH_COMMAND = tuple(c for c in [getattr(click.exceptions, "NoSuchCommand", None)] if c)  # click 8.4+


class UsageFailure(click.ClickException):
    """A usage error as one line on stderr, exit 2 (click's own print four lines of usage and hint)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"edgeslim: error: {one_line(self.message)}", file=file, err=file is None)


def one_line(text: str) -> str:
    """A message that spans lines (a library's, quoted in ours) as one line, so that stderr has one."""
    return " ".join(text.split()) if "\n" in text else text


def command_path(ctx: click.Context | None, subcommand: str | None = None) -> str:
    """`edgeslim compress`, whatever name the program was started under (`python -m edgeslim`, a test runner)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["edgeslim", *reversed(names), *([subcommand] if subcommand and not names else [])])


def param_name(param: click.Parameter) -> str:
    return "/".join(param.opts) if isinstance(param, click.Option) else param.human_readable_name


def sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:]


def usage_sentence(exc: click.ClickException, path: str) -> str:
    """What was wrong with the command line, and where to look: one sentence."""
    see = f"; see `{path} --help`"
    possibilities = getattr(exc, "possibilities", None)
    guess = (f" (did you mean {possibilities[0]}?)" if len(possibilities or []) == 1 else
             f" (did you mean one of {', '.join(possibilities)}?)" if possibilities else "")
    if isinstance(exc, click.NoSuchOption):
        return f"no such option {exc.option_name} for `{path}`{guess}{see}"
    if isinstance(exc, NO_SUCH_COMMAND):
        return f"no such command {exc.command_name!r} for `{path}`{guess}{see}"
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        return f"missing {exc.param.param_type_name} {param_name(exc.param)} for `{path}`{see}"
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        return f"invalid value for {param_name(exc.param)} of `{path}`: {sentence(exc.message)}{see}"
    return f"{sentence(exc.format_message())}{see}"


def show_cause_chain(exc: BaseException) -> None:
    """The traceback of `exc` and of every exception behind it, `raise ... from None` included."""
    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__suppress_context__ = False
        current = current.__cause__ or current.__context__
    click.echo("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip(), err=True)


def missing_extra(exc: BaseException, command: str | None) -> str | None:
    """`compress needs torch, which is not installed here: pip install 'edgeslim[compress]'`, for a module of
    one of edgeslim's optional extras that is not installed; None for any other error (edgeslim's own bug)."""
    from edgeslim.core.errors import install_command

    hint = install_command(exc) if isinstance(exc, ModuleNotFoundError) else None
    if hint is None:
        return None
    return f"{command or 'edgeslim'} needs {exc.name}, which is not installed here: {hint}"
