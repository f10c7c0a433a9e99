"""The version of dlbook, in a module of its own.

The package's metadata (pyproject.toml) reads it from here, and modules
that report it (env, results) import it without importing the whole package.
"""

__version__ = "0.2.0"
