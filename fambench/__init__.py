"""fambench: does an optimizer help speech recognition? Measure it."""

__version__ = "0.1.0"
