"""The geosr command line: one module per command, shared options in options.py, how a command ends
(errors, exit codes, SIGTERM) in exits.py."""
