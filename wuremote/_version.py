"""The package's version, in one place: wuremote.__version__ and pyproject.toml both read it here."""

__version__ = "0.1.0"
