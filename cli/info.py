"""`geosr info`: print a model file's card."""

from __future__ import annotations

import json
import math

import click

from geosr.cli.options import handle_errors, verbosity_options


def format_card(card, path: str) -> str:
    """A readable, multi-line description of a model card."""
    from geosr.checkpoint import expected_shapes

    cfg = card.config
    lines = [
        f"model file   {path}",
        f"name         {card.name}" + (f" - {card.description}" if card.description else ""),
        f"scale        x{cfg.scale}",
        f"bands        {cfg.in_channels} in ({', '.join(card.bands)}), {cfg.out_channels} out",
        f"architecture {cfg.n_blocks} residual blocks, {cfg.channels} channels, attention {cfg.attention}, "
        f"refiner {cfg.refiner}, global skip {'on' if cfg.global_skip else 'off'}",
        f"parameters   {sum(math.prod(shape) for shape in expected_shapes(cfg).values()) / 1e6:.2f} M",
        f"tiles        {card.tile_size} px, overlap {card.overlap} px (input pixels)",
        f"radiometry   {json.dumps(card.radiometry)}",
        f"geosr        {card.geosr_version} (format {card.format_version})",
    ]
    for title, block in (("training", card.training), ("metrics", card.metrics)):
        if block:
            lines.append(f"{title}:")
            lines += [f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in block.items()]
        else:
            lines.append(f"{title:<12} (none recorded)")
    return "\n".join(lines)


@click.command()
@click.argument("model", metavar="[MODEL]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@verbosity_options
@handle_errors
def info(model: str | None, as_json: bool) -> None:
    """Show the model card of MODEL (a .safetensors model file or a bundled model name); without MODEL, list the
    models bundled with geosr.

    Only the file's header is read, and the weights it lists are checked against the card: no weight is loaded and no
    model is built.
    """
    from geosr.checkpoint import bundled_models, default_model_name, read_card

    if model is None:
        models = bundled_models()
        if as_json:
            click.echo(json.dumps({name: read_card(path).to_dict() for name, path in models.items()}, indent=2,
                                  sort_keys=True))
            return
        if not models:
            click.echo("no model is bundled with this installation of geosr")
            return
        for name, path in models.items():
            card = read_card(path)
            m = card.metrics
            quality = (f"val PSNR {m['val_psnr']:.2f} dB / SSIM {m['val_ssim']:.4f} (bicubic "
                       f"{m['val_psnr_bicubic']:.2f} / {m['val_ssim_bicubic']:.4f})"
                       if {"val_psnr", "val_psnr_bicubic"} <= set(m) else "no metrics recorded")
            default = " (default)" if default_model_name(card.scale) == name else ""
            click.echo(f"{name:<16} x{card.scale}{default:<10} {quality}")
        return
    card = read_card(model, weights=True)  # the header's tensors against the card: a card edited to lie is refused
    if as_json:
        click.echo(json.dumps(card.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(format_card(card, model))
