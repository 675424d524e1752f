"""`python -m bertlayers` runs the `bertlayers` program (the command line, and `serve`)."""

from .launch import entry

entry()
