"""Measure bundles of the real small models: file sizes, peak RAM, speed, agreement with torch.

    python -m llasm.export.benchmark CHECKPOINT WORKDIR [--audio a.wav ...] [--plot docs/export-bench.png]

Exports one bundle per encoder format/dtype (LLM: the packaged SmolLM2 Q4_1; CTranslate2 reuses the packaged
whisper-base, stored float16, computed in the bundle's dtype) and one per LLM quantization
(encoder: the packaged whisper-base, CTranslate2 int8), then for each: `verify_bundle` against the torch
checkpoint on the clips, and the runtime `Engine` in a fresh process (peak RSS from the OS, the engine's own
timings for an audio request and for a text request of up to 48 tokens). Prints a Markdown table and JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from llasm.assistant.basemodels import resolve
from llasm.assistant.plotting import PlotUnavailable, pyplot

ENCODER_VARIANTS = [("ct2", "int8"), ("ct2", "float32"), ("onnx", "int8"), ("onnx", "float32")]
LLM_VARIANTS = [None, "f16", "q8_0", "q4_k_m", "q4_0"]  # None: reuse default:smollm2 (Q4_1)

_RUNTIME_PROBE = r"""
import json, resource, sys, time
import numpy as np
from llasm.assistant.audio import load_audio
from llasm.assistant.engine import Engine, GenerationOptions
bundle, clips, threads = sys.argv[1], sys.argv[2:-1], int(sys.argv[-1])
t0 = time.perf_counter()
eng = Engine.load(bundle, n_threads=threads)
load_s = time.perf_counter() - t0
audio = []
for c in clips:  # best of 2 (the machine may be shared); 4 tokens are enough for time to first token
    wav = load_audio(c)
    runs = []
    for _ in range(2):
        eng.new_chat()
        runs.append(eng.ask(wav, options=GenerationOptions(max_tokens=4)).timings)
    audio.append({k: min(r.get(k, 0.0) for r in runs) for k in runs[0]})
texts = []
for _ in range(2):
    eng.new_chat()
    texts.append(eng.ask(text="Write three sentences about the sea.",
                         options=GenerationOptions(max_tokens=32)).timings)
text = max(texts, key=lambda t: t.get("decode_tokens_per_s", 0.0))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"load_s": load_s, "audio": audio, "text": text, "peak_rss_mb": rss}))
"""


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def bundle_size(bundle: Path) -> dict[str, int]:
    """Bytes on disk per part, counting `default:...` references at the size of the packaged files."""
    m = json.loads((bundle / "bundle.json").read_text())
    out = {}
    for part, ref in (("encoder", m["encoder"]["path"]), ("llm", m["llm"]["path"]),
                      ("adaptor", m["adaptor"]["path"])):
        out[part] = _dir_size(resolve(ref) if ref.startswith("default:") else bundle / ref)
    if m["llm"].get("lora"):
        out["lora"] = _dir_size(bundle / m["llm"]["lora"])
    return out


def runtime_probe(bundle: Path, clips: list[str], threads: int = 2) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", _RUNTIME_PROBE, str(bundle), *clips, str(threads)],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"runtime probe failed for {bundle}: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def speak(texts: list[str], out_dir: Path) -> list[str]:
    """espeak-ng clips (16 kHz wav) for the benchmark when no audio is given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, t in enumerate(texts):
        p = out_dir / f"q{i}.wav"
        if not p.is_file():
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(p), "--", t], check=True, capture_output=True)
        paths.append(str(p))
    return paths


def run(checkpoint: Path, work: Path, clips: list[str], threads: int = 2) -> list[dict]:
    from llasm.export.bundle import ExportOptions, export_bundle
    from llasm.export.verify import verify_bundle

    work.mkdir(parents=True, exist_ok=True)
    variants = [(e, d, None) for e, d in ENCODER_VARIANTS] + [("ct2", "int8", q) for q in LLM_VARIANTS[1:]]
    rows = []
    for enc, dtype, quant in variants:
        name = f"{enc}-{dtype}-{quant or 'q4_1'}"
        out = work / name
        t0 = time.perf_counter()
        if not (out / "bundle.json").is_file():  # ct2 reuses the packaged whisper-base (float16 weights)
            export_bundle(checkpoint, out, ExportOptions(encoder=enc, encoder_dtype=dtype, llm_quant=quant),
                          progress=lambda m, n=name: print(f"[{n}] {m}", file=sys.stderr))
        export_s = time.perf_counter() - t0
        cached = out / "verify.json"
        if cached.is_file():
            summary = json.loads(cached.read_text())
        else:
            summary = verify_bundle(out, checkpoint, clips, n_threads=threads).summary()
            cached.write_text(json.dumps(summary))
        probe = runtime_probe(out, clips, threads)
        audio = probe["audio"]
        row = {
            "bundle": name, "encoder": f"{enc} {dtype}", "llm": quant or "q4_1 (packaged)",
            "sizes": bundle_size(out), "export_s": export_s, "verify": summary,
            "peak_rss_mb": probe["peak_rss_mb"], "load_s": probe["load_s"],
            "encoder_ms": sum(a["encoder_ms"] for a in audio) / len(audio),
            "ttft_ms": sum(a["ttft_ms"] for a in audio if "ttft_ms" in a) / max(1, sum("ttft_ms" in a for a in audio)),
            "audio_s": sum(a["audio_s"] for a in audio) / len(audio),
            "decode_tok_s": probe["text"].get("decode_tokens_per_s", 0.0),
            "text_tokens": probe["text"].get("n_tokens", 0.0),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| encoder | LLM | encoder MB | LLM MB | peak RAM MB | encoder ms | TTFT ms | decode tok/s | "
            "enc rel RMS | adaptor rel RMS | 1st token | top-5 |\n|" + "---|" * 12)
    lines = [head]
    for r in rows:
        v, s = r["verify"], r["sizes"]
        lines.append(
            f"| {r['encoder']} | {r['llm']} | {s['encoder'] / 1e6:.0f} | {s['llm'] / 1e6:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['encoder_ms']:.0f} | {r['ttft_ms']:.0f} | {r['decode_tok_s']:.0f} | {v['encoder_rel_max']:.3f} | "
            f"{v['adaptor_rel_max']:.3f} | {v['first_token_agreement']:.0%} | {v['top5_overlap']:.0%} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = [f"{r['encoder']}\n{r['llm']}" for r in rows]
    size = [(r["sizes"]["encoder"] + r["sizes"]["llm"]) / 1e6 for r in rows]
    axes[0].barh(names, size, color="tab:blue")
    axes[0].set_xlabel("bundle MB (encoder + LLM)")
    axes[1].barh(names, [r["peak_rss_mb"] for r in rows], color="tab:orange")
    axes[1].set_xlabel("peak RAM MB (runtime process)")
    axes[2].barh(names, [r["verify"]["top5_overlap"] * 100 for r in rows], color="tab:green", label="top-5 overlap %")
    axes[2].barh(names, [100 * (1 - r["verify"]["encoder_rel_max"]) for r in rows], color="none",
                 edgecolor="black", label="100 x (1 - encoder rel RMS)")
    axes[2].set_xlabel("agreement with torch")
    axes[2].legend(loc="lower left", fontsize=7)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--audio", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.plot:
        try:
            pyplot()  # before the exports: a missing plot extra costs nothing
        except PlotUnavailable as e:
            sys.exit(f"export.benchmark: {e}")
    clips = a.audio or speak(["What is the capital of France?", "Tell me a short joke about cats.",
                              "How many legs does a spider have?"], a.work / "clips")
    rows = run(a.checkpoint, a.work, clips, a.threads)
    print(markdown(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    if a.plot:
        plot(rows, a.plot)


if __name__ == "__main__":
    main()
