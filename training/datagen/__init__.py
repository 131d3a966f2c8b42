"""Offline speech datasets built with text-to-speech (`llasm-train data ...`)."""
