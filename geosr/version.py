"""geosr's version, in a module of its own: the package, model cards, reports and provenance tags read it here."""

__version__ = "0.1.0"
