"""`geosr upscale`."""

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def upscale() -> None:
    """Super-resolve GeoTIFFs (not yet available in this version)."""
    raise click.ClickException("geosr upscale is not yet available in this version of geosr.")
