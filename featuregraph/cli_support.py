"""What every featuregraph command shares: one-line errors, and options built from config fields.

A leaf module (typer and featuregraph.errors only), so that command modules (featuregraph/cli.py,
query/cli.py) can use it without importing each other.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any, Callable, Literal, Optional

import typer

from featuregraph.errors import FeaturegraphError


def user_errors(fn: Callable) -> Callable:
    """Show featuregraph's own errors as one line, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FeaturegraphError as exc:
            # typer vendors its own click, so exit the way it expects rather than via ClickException.
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _option(f: dataclasses.Field, annotation: Any) -> tuple[str, Any, Any]:
    """(parameter name, annotation, typer.Option) for one config field.

    A bool field that defaults to True becomes a ``--no-...`` switch (its metadata ``flag``); one
    that defaults to None a ``--x/--no-x`` pair; ``choices`` in the metadata become a choice.
    """
    meta = f.metadata
    if "help" not in meta:
        raise TypeError(f"config field {f.name} has no help: declare it with setting(default, help)")
    flag = "--" + f.name.replace("_", "-")
    args = typing.get_args(annotation)
    if annotation is bool and f.default is True:
        off = meta.get("flag", f"--no-{flag[2:]}")
        name = off[2:].replace("-", "_")
        # The field's help starts with the verb the switch turns off ("Fold ..." -> "Do not fold ...").
        return (
            name,
            bool,
            typer.Option(False, off, help=f"Do not {meta['help'][0].lower()}{meta['help'][1:]}"),
        )
    if bool in args and f.default is None:
        return f.name, Optional[bool], typer.Option(None, f"{flag}/--no-{flag[2:]}", help=meta["help"])
    if "choices" in meta:
        annotation = Literal[tuple(meta["choices"])]  # typer turns a Literal into a click Choice
    return f.name, annotation, typer.Option(f.default, flag, help=meta["help"])


def config_options(target: str, cls: type, skip: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Add a flag for each field of the dataclass ``cls`` (but ``skip``) to a typer command.

    The command receives the values as one keyword argument ``target``: a dict of field name ->
    value, ready for ``cls(**values)`` (a ``--no-x`` switch comes back as ``x = not switch``).
    """
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    built = {f.name: _option(f, hints[f.name]) for f in fields}

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != target]
        for name, annotation, option in built.values():
            params.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            )

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {}
            for field_name, (name, _, _) in built.items():
                value = kwargs.pop(name)
                values[field_name] = not value if name != field_name and name.startswith("no_") else value
            return fn(*args, **kwargs, **{target: values})

        # typer reads the parameters from the signature; the wrapped function's own annotations
        # would otherwise be looked up by name and hide the generated ones.
        wrapper.__signature__ = signature.replace(parameters=params)
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


__all__ = ["config_options", "user_errors"]
