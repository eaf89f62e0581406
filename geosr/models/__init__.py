"""The DEGAN networks: generator (with its attention and refiner blocks) and discriminator."""

from geosr.models.discriminator import Discriminator
from geosr.models.generator import Generator, GeneratorConfig, count_parameters

__all__ = ["Discriminator", "Generator", "GeneratorConfig", "count_parameters"]
