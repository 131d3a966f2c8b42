"""Augmentation of synthetic speech (numpy + soxr): make clean TTS sound like a laptop in a room.

Effects, each a pure function of the audio and a `numpy.random.Generator`:
- `speed`: speed perturbation (resampling, tempo and pitch change together, as Kaldi's 0.9/1.1);
- `gain`: level change in dB;
- `noise`: additive noise at a random SNR: white, pink (1/f), brown (1/f^2) or mains hum with harmonics;
- `reverb`: a synthetic room: an exponentially decaying noise impulse response with a given RT60;
- `band`: band-limiting like a cheap microphone: smooth high-pass and low-pass in the frequency domain;
- `silence`: leading and trailing silence (low-level noise floor), as a VAD segment would have.

`plan_augmentation(rng, split)` draws a recipe. Train and eval draw from disjoint families so the held-out
split measures generalisation: train uses white/pink noise, small rooms (RT60 0.15-0.45 s) and a laptop
band (100-200 Hz to 5.5-7.5 kHz); eval uses brown noise and hum, large rooms (RT60 0.6-1.0 s) and a
telephone band (300-3400 Hz), and every eval clip has at least one of these. The recipe's `name` (the
manifest's `aug` field) lists the effects, e.g. `speed+reverb_small+noise_pink`. `eval_acoustics="matched"` or
`"clean"` gives held-out clips the training families or no effect instead (held-out voices either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SR = 16000
TRAIN_NOISES = ("white", "pink")
EVAL_NOISES = ("brown", "hum")


@dataclass
class Recipe:
    """An augmentation plan: the effects in order with their parameters."""

    steps: list[tuple[str, dict[str, float | str]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        parts = []
        for kind, p in self.steps:
            if kind == "noise":
                parts.append(f"noise_{p['color']}")
            elif kind in ("reverb", "band"):
                parts.append(f"{kind}_{p['family']}")
            else:
                parts.append(kind)
        return "+".join(parts) or "clean"


EVAL_ACOUSTICS = ("unseen", "matched", "clean")


def plan_augmentation(rng: np.random.Generator, split: str, clean_fraction: float = 0.2,
                      eval_acoustics: str = "unseen") -> Recipe:
    """Draw an augmentation recipe for a clip of `split` ("train" or "eval").

    `eval_acoustics` sets what held-out clips sound like: "unseen" (the default: effect families training
    never has), "matched" (the training families: held-out voices in the rooms and microphones training
    knows) or "clean" (no effect but the leading and trailing silence)."""
    if eval_acoustics not in EVAL_ACOUSTICS:
        raise ValueError(f"unknown eval acoustics {eval_acoustics!r}: use one of {', '.join(EVAL_ACOUSTICS)}")
    steps: list[tuple[str, dict[str, float | str]]] = []
    if split == "eval" and eval_acoustics == "clean":
        return Recipe([("silence", {"lead": float(rng.uniform(0.05, 0.3)), "trail": float(rng.uniform(0.05, 0.3))})])
    if split == "eval" and eval_acoustics == "matched":
        split = "train"
    if split == "train" and rng.random() < clean_fraction:
        return Recipe([("silence", {"lead": float(rng.uniform(0.05, 0.3)), "trail": float(rng.uniform(0.05, 0.3))})])
    if rng.random() < 0.5:
        steps.append(("speed", {"factor": float(rng.choice([0.9, 0.95, 1.05, 1.1]))}))
    if split == "train":
        use_reverb, use_band, use_noise = rng.random() < 0.4, rng.random() < 0.4, rng.random() < 0.6
        reverb = {"family": "small", "rt60": float(rng.uniform(0.15, 0.45)), "wet": float(rng.uniform(0.2, 0.5))}
        band = {"family": "laptop", "low": float(rng.uniform(100, 200)), "high": float(rng.uniform(5500, 7500))}
        noise = {"color": str(rng.choice(TRAIN_NOISES)), "snr": float(rng.uniform(10, 30))}
    else:
        use_reverb, use_band, use_noise = rng.random() < 0.5, rng.random() < 0.4, rng.random() < 0.6
        if not (use_reverb or use_band or use_noise):  # every eval clip gets an effect train never has
            use_noise = True
        reverb = {"family": "large", "rt60": float(rng.uniform(0.6, 1.0)), "wet": float(rng.uniform(0.3, 0.6))}
        band = {"family": "phone", "low": 300.0, "high": 3400.0}
        noise = {"color": str(rng.choice(EVAL_NOISES)), "snr": float(rng.uniform(8, 25))}
    if use_reverb:
        steps.append(("reverb", reverb))
    if use_band:
        steps.append(("band", band))
    steps.append(("silence", {"lead": float(rng.uniform(0.05, 0.5)), "trail": float(rng.uniform(0.05, 0.5))}))
    if use_noise:
        steps.append(("noise", noise))
    if rng.random() < 0.7:
        steps.append(("gain", {"db": float(rng.uniform(-12, 4))}))
    return Recipe(steps)


# --------------------------------------------------------------------------------------------------
# effects


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    import soxr

    return soxr.resample(x, SR * factor, SR, quality="HQ").astype(np.float32)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    return (x * 10 ** (db / 20)).astype(np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    if color == "hum":
        t = np.arange(n) / SR
        f0 = float(rng.choice([50.0, 60.0]))
        hum = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8))
        return (hum + 0.05 * rng.standard_normal(n)).astype(np.float32)
    white = rng.standard_normal(n)
    if color == "white":
        return white.astype(np.float32)
    exponent = {"pink": 0.5, "brown": 1.0}[color]
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec /= np.maximum(f, 20.0) ** exponent
    return np.fft.irfft(spec, n).astype(np.float32)


def add_noise(x: np.ndarray, color: str, snr: float, rng: np.random.Generator, speech_power: float | None = None) -> np.ndarray:
    noise = colored_noise(len(x), color, rng)
    p_speech = speech_power if speech_power is not None else float(np.mean(x**2))
    p_noise = float(np.mean(noise**2)) or 1.0
    noise *= np.sqrt(p_speech / (p_noise * 10 ** (snr / 10)))
    return (x + noise).astype(np.float32)


def reverb(x: np.ndarray, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    ir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    ir[: int(0.002 * SR)] = 0.0  # first reflections arrive after ~2 ms
    ir /= np.sqrt(np.sum(ir**2)) + 1e-9
    size = len(x) + n - 1
    nfft = 1 << (size - 1).bit_length()
    tail = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[:size]
    y = np.concatenate([x, np.zeros(n - 1, np.float32)]) * (1 - wet) + tail * wet
    peak_in, peak_out = np.abs(x).max(), np.abs(y).max()
    return (y * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(np.float32)


def band(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Smooth band-pass (2nd-order-like slopes) applied in the frequency domain."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    hp = (f / low) ** 2 / (1 + (f / low) ** 2)
    lp = 1 / (1 + (f / high) ** 4)
    return np.fft.irfft(spec * hp * lp, len(x)).astype(np.float32)


def silence(x: np.ndarray, lead: float, trail: float) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead * SR), np.float32), x, np.zeros(int(trail * SR), np.float32)])


def apply(x: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """Run `recipe` on 16 kHz mono `x`; the result never clips (peak at most 0.98)."""
    x = np.asarray(x, dtype=np.float32)
    speech_power = None
    for kind, p in recipe.steps:
        if kind == "speed":
            x = speed(x, float(p["factor"]))
        elif kind == "gain":
            x = gain(x, float(p["db"]))
        elif kind == "reverb":
            x = reverb(x, float(p["rt60"]), float(p["wet"]), rng)
        elif kind == "band":
            x = band(x, float(p["low"]), float(p["high"]))
        elif kind == "silence":
            speech_power = float(np.mean(x**2))  # SNR is relative to the speech, not the padding
            x = silence(x, float(p["lead"]), float(p["trail"]))
        elif kind == "noise":
            x = add_noise(x, str(p["color"]), float(p["snr"]), rng, speech_power)
        else:
            raise ValueError(f"unknown augmentation {kind!r}")
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 0.98:
        x = x * (0.98 / peak)
    return x.astype(np.float32)
