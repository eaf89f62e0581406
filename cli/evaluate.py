"""`geosr evaluate`."""

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def evaluate() -> None:
    """Measure PSNR/SSIM (not yet available in this version)."""
    raise click.ClickException("geosr evaluate is not yet available in this version of geosr.")
