"""Live microphone level: a bar from -60 dBFS to 0 dBFS with a slowly falling peak mark."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

FLOOR_DB = -60.0
PEAK_FALL_DB_PER_S = 20.0


class LevelMeter(Widget):
    level: reactive[float] = reactive(-100.0)  # dBFS of the latest chunk
    active: reactive[bool] = reactive(False)  # a live source is attached

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.peak = -100.0
        self._peak_t = time.monotonic()
        self.updates = 0  # how many levels were shown (tests check the meter moves)

    def watch_level(self, level: float) -> None:
        now = time.monotonic()
        decayed = self.peak - PEAK_FALL_DB_PER_S * (now - self._peak_t)
        self.peak = max(level, decayed)
        self._peak_t = now
        self.updates += 1

    @staticmethod
    def fraction(db: float) -> float:
        return min(1.0, max(0.0, (db - FLOOR_DB) / -FLOOR_DB))

    def render(self) -> Text:
        width = max(4, self.size.width - 9)
        if not self.active:
            return Text("mic ".ljust(4) + "·" * width + "   off", style="dim")
        n = round(self.fraction(self.level) * width)
        p = min(width - 1, round(self.fraction(self.peak) * width))
        bar = Text("mic ")
        for i in range(width):
            if i < n:
                style = "green" if i < width * 0.7 else ("yellow" if i < width * 0.9 else "red")
                bar.append("█", style=style)
            elif i == p and self.peak > FLOOR_DB:
                bar.append("▏", style="bold")
            else:
                bar.append("░", style="dim")
        bar.append(f" {max(self.level, -99):4.0f}dB")
        return bar
