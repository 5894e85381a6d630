"""The package version, in a leaf module so the bottom layers can record it without importing the package."""

__version__ = "0.1.0"
