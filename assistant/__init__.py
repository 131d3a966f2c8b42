"""llasm runtime: audio front end, prompt, adaptor and the local assistant (no torch)."""

__version__ = "0.1.0"
