"""geosr: super-resolution of georeferenced rasters with DEGAN."""

__version__ = "0.1.0"
