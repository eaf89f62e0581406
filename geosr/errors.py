"""Exceptions that carry a message meant for the user.

Library code raises these with a one-line message that names the file, the value and the remedy; the command line
turns them into an error line and a non-zero exit code without a traceback.
"""


class GeosrError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class ModelFileError(GeosrError):
    """A model file that cannot be read: wrong format, corrupt, or with an invalid model card."""


class RasterError(GeosrError):
    """A raster that cannot be processed as asked."""


class DataError(GeosrError):
    """A training or evaluation data set that cannot be used as asked."""


class WriteError(GeosrError):
    """A file that could not be written (disk full, no permission, ...); what was there before is left intact."""
