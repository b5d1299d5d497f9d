"""``geopsp info``: describe a model file (architecture, classes, bands, normalization...)."""

from __future__ import annotations

import json
import re

import click


@click.command("info")
@click.argument("model", metavar="MODEL")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the model's metadata as JSON on stdout instead of a summary.",
)
def command(model: str, as_json: bool) -> None:
    """Describe the geopsp model file MODEL.

    Prints the architecture, parameter count, input bands and their normalization, chip
    size, training resolution and CRS, the classes with their colors, and the metrics of the
    saved epoch. Reads only the file header: no weights are loaded.

    \b
    Examples:
      geopsp info model.safetensors
      geopsp info model.safetensors --json
    """
    from geopsp.models.modelfile import parameter_count, read_metadata

    metadata = read_metadata(model)
    if as_json:
        click.echo(json.dumps(metadata, indent=2))
        return
    click.echo(summary(model, metadata, parameter_count(model)))


def _short_crs(crs: object) -> str:
    if crs is None:
        return "unknown"
    text = str(crs)
    # A WKT CRS is long; its first quoted string is the CRS name, and an ID[...] its code.
    name = re.search(r'^\w+\["([^"]+)"', text)
    code = re.findall(r'(?:ID|AUTHORITY)\["(\w+)",\s*"?(\d+)"?\]', text)
    if name:
        return name.group(1) + (f" ({code[-1][0]}:{code[-1][1]})" if code else "")
    return text


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        text = json.dumps(value)
        return text if len(text) <= 70 else text[:67] + "..."
    return str(value)


def summary(path: str, md: dict, n_params: int) -> str:
    """Human-readable multi-line summary of a model file's metadata."""
    arch = md["architecture"]
    pr = arch.get("pointrend_params") or {}
    pointrend = f"on ({pr.get('points', '?')} points per step)" if arch["pointrend"] else "off"
    bands = md.get("bands") or []
    lines = [
        f"{path}: geopsp model (format {md['format_version']}, geopsp {md['geopsp_version']})",
        f"  backbone        {arch['backbone']} (output stride {arch['output_stride']}; "
        f"input height and width must be multiples of {arch['output_stride']})",
        f"  pyramid sizes   {','.join(str(s) for s in arch['pyramid_sizes'])}",
        f"  decoder         {arch['decoder']}",
        f"  PointRend       {pointrend}",
        f"  parameters      {n_params:,}",
        f"  input bands     {arch['in_channels']}"
        + (f" (source bands {','.join(str(b) for b in bands)})" if bands else ""),
        f"  chip size       {md.get('chip_size') or 'unknown'}",
    ]
    res = md.get("resolution")
    if isinstance(res, list | tuple) and res:
        res_text = " x ".join(_fmt(float(r)) for r in res)
    else:
        res_text = _fmt(res) if res is not None else "unknown"
    lines.append(f"  resolution      {res_text}")
    lines.append(f"  CRS             {_short_crs(md.get('crs'))}")
    norm = md.get("normalization") or {}
    mean, std = norm.get("mean") or [], norm.get("std") or []
    if mean:
        lines.append("  normalization   band  mean        std")
        for i, (m, s) in enumerate(zip(mean, std, strict=False)):
            label = bands[i] if i < len(bands) else i + 1
            lines.append(f"                  {label!s:<5} {m:<11.5g} {s:.5g}")
    classes = md.get("classes") or []
    lines.append(f"  classes         {len(classes)}")
    for c in classes:
        r, g, b = (list(c.get("color") or [0, 0, 0]) + [0, 0, 0])[:3]
        lines.append(
            f"                  {c.get('value')!s:>3}  #{r:02x}{g:02x}{b:02x}  {c.get('name')}"
        )
    from geopsp.export import export_targets

    lines.append("  exports to      (geopsp export-model)")
    lines += [f"                  {fmt:<5} {what}" for fmt, what in export_targets(md)]
    metrics = md.get("metrics") or {}
    if metrics:
        lines.append("  metrics")
        for k, v in metrics.items():
            lines.append(f"                  {k:<16} {_fmt(v)}")
    return "\n".join(lines)
