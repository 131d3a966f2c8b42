"""Save an SVG screenshot of the TUI mid-conversation (used for docs/tui-screenshot.svg).

    python -m llasm.assistant.tui.screenshot docs/tui-screenshot.svg [--bundle DIR] [--mic-file talk.wav]
        [--text "What is the capital of France?"] ...

Runs the real app headlessly (Textual's test driver): asks each typed question, replays the recording
through the capture -> VAD path, and saves the screen once the spoken turns are answered, while the
microphone is still live (pad the recording with trailing silence).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from llasm.assistant.capture import FileSource
from llasm.assistant.handsfree import load_engine
from llasm.assistant.settings import Settings
from llasm.assistant.tui.app import AssistantApp


async def _shoot(out: Path, settings: Settings, texts: list[str], mic_file: str | None, size: tuple[int, int],
                 utterances: int = 1) -> int:
    engine = load_engine(settings)
    source = FileSource(mic_file, realtime=True) if mic_file else None
    app = AssistantApp(settings, engine=engine, source=source)
    async with app.run_test(size=size) as pilot:
        for i, text in enumerate(texts):
            app.submit(text=text)
            while len(app.results) < i + 1:
                await pilot.pause(0.05)
        if source is not None:
            # wait for the spoken turns' replies; shoot while the microphone is still live
            end = time.monotonic() + source.duration_s + 60
            while len(app.results) < len(texts) + utterances and time.monotonic() < end:
                await pilot.pause(0.05)
        await pilot.pause(0.3)
        app.save_svg(out)
    return len(app.results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--bundle")
    ap.add_argument("--mic-file")
    ap.add_argument("--text", action="append", default=[])
    ap.add_argument("--max-tokens", type=int, default=60)
    ap.add_argument("--utterances", type=int, default=1, help="spoken turns in --mic-file to wait for")
    ap.add_argument("--size", default="100x34")
    a = ap.parse_args(argv)
    w, h = (int(x) for x in a.size.split("x"))
    settings = Settings(bundle=a.bundle, max_tokens=a.max_tokens, history=False)
    n = asyncio.run(_shoot(a.out, settings, a.text, a.mic_file, (w, h), a.utterances))
    print(f"saved {a.out} after {n} turns", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
