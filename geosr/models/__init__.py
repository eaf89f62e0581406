"""The DEGAN networks: generator (with its attention and refiner blocks) and discriminator."""

from geosr.models.attention import ATTENTIONS
from geosr.models.discriminator import Discriminator
from geosr.models.generator import Generator, GeneratorConfig, count_parameters
from geosr.models.refiner import REFINERS

__all__ = ["ATTENTIONS", "REFINERS", "Discriminator", "Generator", "GeneratorConfig", "count_parameters"]
