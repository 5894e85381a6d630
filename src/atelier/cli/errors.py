"""Error messages on the command line: the settings a library error names become the flags of the command.

The library speaks Python: "pass verify=False to use deliberately different weights". Where a message is
a :class:`~atelier.data.base.Message`, each setting in it is an :class:`~atelier.data.base.Option` with a
``key`` saying which setting it is; :data:`FLAGS` spells each key as a flag. A flag is used only where
the command that ran has it (its argparse ``dest`` is in the parsed arguments); elsewhere the Python
spelling stays, since a flag the command does not accept would mislead more.

    >>> error_text(exc, args)   # "... pass --no-verify-weights to use deliberately different weights ..."
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from atelier.data.base import Message, Option

__all__ = ["FLAGS", "error_text", "spell_option", "warnings_to_stderr"]

#: Option key -> (how the CLI spells it, the argparse ``dest`` (or dests) a command must have for that spelling).
FLAGS: dict[str, tuple[str, str | tuple[str, ...]]] = {
    "no_verify_weights": ("--no-verify-weights", "verify_weights"),
    "weights_sha256": ("--weights-sha256 HEX", "weights_sha256"),
    "weights_path": ("--weights PATH", "weights"),
    "inception_weights_path": ("--inception-weights PATH", "inception_weights"),
    "extractor_inception": ("--extractor inception-v3", "extractor"),
    "downloads_off": ("--offline was given", "offline"),  # a state, as in "not in the cache and ..."
    "no_fallback": ("--no-fallback", ("no_fallback", "fallback")),
    "no_verify_data": ("--no-verify", "verify"),
    "data": ("--data", ("data", "name")),
    "data_dir": ("--data-dir DIR", "data_dir"),
    "not_strict": ("leave out --strict", "strict"),
    "strict": ("--strict", "strict"),
    "overwrite": ("--overwrite", "overwrite"),
    "resume": ("--resume", "resume"),
    "allow_nonfinite": ("--allow-nonfinite", "allow_nonfinite"),
    "init_from": ("--init-from", "init_from"),
    "init_force": ("--init-force", "init_force"),
    "unconditional": ("--no-conditional", "conditional"),
}


def spell_option(option: Option, args: argparse.Namespace | None = None) -> str | None:
    """The CLI's spelling of ``option``, or None (keep the Python one) when the command has no such flag.

    Without ``args`` every known key is spelled as a flag.
    """
    known = FLAGS.get(option.key)
    if known is None:
        return None
    flag, dests = known
    dests = (dests,) if isinstance(dests, str) else dests
    return flag if args is None or any(hasattr(args, d) for d in dests) else None


def error_text(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """What the CLI prints for ``exc`` (after "atelier: error: "): its message with flags for settings."""
    message = getattr(exc, "message", None)
    if not isinstance(message, Message) or not message.options:
        return printable(str(exc))
    return printable(message.render(lambda option: spell_option(option, args)))


def printable(text: str) -> str:
    """``text`` with control characters (a carriage return in a file name given on the command line, an
    escape sequence) written as escapes, so a message cannot overwrite or hide its own line."""
    return "".join(c if c in "\n\t" or c.isprintable() else repr(c)[1:-1] for c in text)


@contextmanager
def warnings_to_stderr(*categories: type[Warning], prefix: str = "atelier: warning: ") -> Iterator[None]:
    """Within the block, warnings of ``categories`` (e.g. NaN weights loaded with ``--allow-nonfinite``)
    are printed at once as ``PREFIX MESSAGE`` on stderr, each time they come, instead of Python's
    ``file:line: UserWarning`` form; other warnings keep their usual display. What the library changed
    about the user's input (a :class:`~atelier.data.base.ConversionNote`) is shown with ``prefix="note: "``,
    like the CLI's own notes."""
    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        shown = warnings.showwarning
        for category in categories:
            warnings.simplefilter("always", category)

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, categories):
                print(f"{prefix}{message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
