"""`python -m bertlayers` runs the command line."""

from .cli import entry

entry()
