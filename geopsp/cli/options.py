"""Options shared by several commands, spelled the GDAL/rio way."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import click

T = TypeVar("T")

overwrite = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")

bands = click.option(
    "-b",
    "--bands",
    default=None,
    metavar="1,2,3",
    help="Source bands to use, 1-based and comma-separated (default: all, or the model's).",
)

device = click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda[:N]",
    help="Compute device; auto picks CUDA when available.",
)


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:  # torch is imported only when the option is given
        import torch

        torch.set_num_threads(value)


threads = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    expose_value=False,
    callback=_set_threads,
    help="CPU threads for the model [default: OMP_NUM_THREADS, else all cores]; on a busy "
    "machine 1 can be much faster.",
)

# Label options of export-chips (training labels) and evaluate (reference labels): the same
# names, types and checks; each command says what the labels are for.
layer = click.option(
    "--layer",
    default=None,
    metavar="NAME",
    help="Layer of a multi-layer vector (default: the only one).",
)

all_touched = click.option(
    "--all-touched",
    is_flag=True,
    help="Burn every pixel a feature touches, not only those whose center it covers.",
)


def class_field(help_text: str):
    return click.option("--class-field", default=None, metavar="FIELD", help=help_text)


def unlabeled(help_text: str):
    return click.option(
        "--unlabeled",
        type=click.Choice(["background", "ignore"]),
        default="background",
        show_default=True,
        help=help_text,
    )


def buffer(help_text: str):
    return click.option(
        "--buffer",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="DIST",
        help=help_text,
    )


seed = click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")

workers = click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Worker processes (0 = in the main process).",
)

creation_options = click.option(
    "--co",
    "creation_options",
    multiple=True,
    metavar="NAME=VALUE",
    help="GDAL creation option for the output, repeatable (e.g. --co COMPRESS=ZSTD).",
)


def parse_creation_options(items: tuple[str, ...]) -> dict[str, str]:
    """Turn ``("COMPRESS=ZSTD", ...)`` into a dict, as rio does."""
    out = {}
    for it in items:
        if "=" not in it:
            raise click.BadParameter(f"expected NAME=VALUE, got {it!r}", param_hint="--co")
        k, v = it.split("=", 1)
        out[k.strip().upper()] = v.strip()
    return out


def build(cls: type[T], params: dict[str, Any], **parsed: Any) -> T:
    """A command's typed options dataclass from click's parameters.

    Each field takes the parameter of the same name; ``parsed`` gives the fields whose value
    the command converted (``bands=parse_bands(...)``). A parameter without a field raises
    ``TypeError``, so an option can never be dropped on its way to the library.
    """
    values = {**params, **parsed}
    unknown = set(values) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field for {', '.join(sorted(unknown))}")
    return cls(**values)


def label_options(*, class_field_help: str, unlabeled_help: str, buffer_help: str):
    """The label options of export-chips (training labels) and evaluate (reference labels):
    the same names, types and checks; each command says what its labels are for."""
    group = [
        class_field(class_field_help),
        layer,
        unlabeled(unlabeled_help),
        buffer(buffer_help),
        all_touched,
    ]

    def apply(f):
        for option in reversed(group):  # listed in --help in the order above
            f = option(f)
        return f

    return apply


def progress_enabled(ctx: click.Context) -> bool:
    """Progress bars are on unless ``-q`` was given."""
    root = ctx.find_root()
    return bool((root.obj or {}).get("progress", True))


def _load_config(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise click.BadParameter(f"{path}: no such file", param_hint="-c/--config")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # any parser error is a usage error on that file
        raise click.BadParameter(f"{path}: cannot parse ({exc})", param_hint="-c/--config") from exc
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"{path}: expected a mapping of option names to values", param_hint="-c/--config"
        )
    # Accept option spellings with dashes or underscores, and lists for comma options.
    out = {}
    for k, v in data.items():
        key = str(k).lstrip("-").replace("-", "_")
        if isinstance(v, list) and key not in ("chips_dirs", "inputs", "images"):
            v = ",".join(str(x) for x in v)
        out[key] = v
    return out


def _check_config_keys(ctx: click.Context, path: str, cfg: dict) -> None:
    """Refuse keys that name no option of the command: a misspelt option would otherwise be
    silently ignored and the run would use its default."""
    import difflib

    known = {p.name for p in ctx.command.params if p.expose_value and p.name}
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise click.BadParameter(
                f"{path}: unknown option {key!r} for {ctx.command.name}{hint}; "
                "the keys are the command's option names",
                param_hint="-c/--config",
            )


def _config_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        cfg = _load_config(value)
        _check_config_keys(ctx, value, cfg)
        ctx.default_map = {**(ctx.default_map or {}), **cfg}
    return value


config = click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False),
    callback=_config_callback,
    is_eager=True,
    expose_value=False,
    help="YAML/TOML/JSON file of option defaults (command-line options win).",
)


def env_rank() -> int:
    """Rank of this process under torchrun (0 when not distributed)."""
    from geopsp.core.runtime import launch

    return launch().rank
