"""`geosr train`."""

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def train() -> None:
    """Train the DEGAN GAN (not yet available in this version)."""
    raise click.ClickException("geosr train is not yet available in this version of geosr.")
