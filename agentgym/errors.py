"""Errors that the command line reports as one line instead of a traceback, and the checks that raise them.

Raise :class:`UsageError` where a user's input (a flag, a config key, a path, a file they wrote) is wrong,
with a message that says how to fix it. Anything else that escapes is a bug and keeps its traceback.

Two checks shared by every entry point: :func:`check_kwargs` (keyword arguments a user wrote, against the
signature they are meant for) and :func:`check_writable_dir` (an output directory, by writing into it).
"""

from __future__ import annotations

import collections.abc
import inspect
import os
import tempfile
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """Bad input from the user: ``agentgym`` prints ``agentgym: error: <message>`` and exits with status 2.

    A subclass of ``ValueError`` so that library callers who already catch ``ValueError`` keep working.
    """


# ----- keyword arguments -----


def accepted_kwargs(target: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """(name -> type hint, open) of the keyword arguments ``target`` takes. For a class, an ``__init__``
    that takes ``**kwargs`` is taken to pass them on to the next ``__init__`` of the MRO (the convention of
    agentgym's environments); ``open`` is True when some ``**kwargs`` lead to a signature unknown here,
    so that any name may be right. A parameter without a usable annotation gets ``Any``."""
    if isinstance(target, type):
        inits = [cls.__dict__["__init__"] for cls in target.__mro__ if "__init__" in cls.__dict__]
        skip_first = True
    else:
        inits, skip_first = [target], False
    params: dict[str, Any] = {}
    for init in inits:
        if init is object.__init__:  # object takes no keyword: the chain of **kwargs ends here
            return params, False
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):  # a builtin without a signature
            return params, True
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - an annotation that does not resolve: check the names only
            hints = {}
        passes_on = False
        for i, p in enumerate(signature.parameters.values()):
            if skip_first and i == 0:
                continue
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params.setdefault(p.name, hints.get(p.name, Any))
            elif p.kind is p.VAR_KEYWORD:
                passes_on = True
        if not passes_on:
            return params, False
    return params, True


def check_kwargs(
    target: Callable[..., Any], kwargs: Mapping[str, Any], what: str, *, fixed: Collection[str] = ()
) -> None:
    """Raise :class:`UsageError` unless ``target(**kwargs)`` names only parameters it takes, each with a
    value of its annotated type (as JSON or YAML gives them: a list stands for a tuple or a sequence, a
    string for a path). ``fixed``: parameters the caller sets itself, which the user may not. ``what``
    names the target in the message, e.g. ``agentgym/FrozenLake-v0``."""
    params, open_ended = accepted_kwargs(target)
    for name in fixed:
        params.pop(name, None)
    unknown = [k for k in kwargs if k in fixed or (k not in params and not open_ended)]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise UsageError(
            f"{what} takes no keyword argument {names}; it takes: {', '.join(sorted(params)) or 'none'}"
        )
    for name, value in kwargs.items():
        hint = params.get(name, Any)
        if not conforms(value, hint):
            raise UsageError(f"{what}: {name}={value!r} must be {type_name(hint)}")


def _is_path_type(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, os.PathLike)


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from JSON or YAML) fits the type hint ``hint``; a hint this does not understand
    (a protocol, a type variable, a callable) lets any value through, for the callee to judge."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(map(conforms, value, args)))
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable) or hint in (list, tuple):
        # a string is a sequence too, but never the list the user meant
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(conforms(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    if origin is not None:
        return True
    if _is_path_type(hint):
        return isinstance(value, (str, os.PathLike))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    """A type hint in the words of a JSON or YAML value: ``int | None`` is "an integer or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_name(a) for a in args))  # str | PathLike: "a string" once
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} items ({', '.join(type_name(a) for a in args)})"
    if origin in (tuple, list, collections.abc.Sequence, collections.abc.Iterable):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "an object (a mapping)"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    if _is_path_type(hint):
        return "a string"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    """The items of a list of ``hint``: "integers", "strings or integers"."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_plural(a) for a in typing.get_args(hint)))
    names = {bool: "booleans", int: "integers", float: "numbers", str: "strings", type(None): "nulls"}
    if hint in names:
        return names[hint]
    return "strings" if _is_path_type(hint) else f"values of type {type_name(hint)}"


# ----- paths -----


def check_writable_dir(path: str | Path, what: str) -> None:
    """Raise :class:`UsageError` unless ``path`` is a directory this process can create files in, or one
    it can create. Tested by writing (a temporary file in ``path`` or its nearest existing parent), not by
    reading permission bits, which do not tell: root ignores them, a read-only mount does not show in them.
    ``what`` names the setting in the message, e.g. ``trainer.output_dir``."""
    path = Path(path)
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent  # ends at "." or "/", which exist
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise UsageError(
            f"{what} {path} {where}, not a directory; give a directory (it is created if missing)"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".agentgym-write-test-")
    except OSError as exc:
        inside = "" if existing == path else f" (it would be created in {existing})"
        raise UsageError(
            f"{what} {path} is not writable{inside}: {exc.strerror}; choose a directory you can write to"
        ) from None
    os.close(fd)
    os.unlink(probe)
