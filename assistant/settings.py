"""Settings for the hands-free assistant: defaults < settings.toml < command-line flags.

The TOML file lives in the user config directory (`platformdirs.user_config_dir("llasm")/settings.toml`,
or `$LLASM_CONFIG`); every command-line flag is a key there, spelled with underscores, plus the VAD and
speech settings that have no flag. Example:

    mic = true
    input_device = "USB"
    speak = true
    barge_in = true
    temperature = 0.2
    max_tokens = 200

    [vad]
    aggressiveness = 2
    end_silence_ms = 600

A flag given on the command line wins, even when it equals the built-in default (`--temperature 0` undoes
`temperature = 0.2`); a flag left out (None, or False for on/off flags) lets the file decide; neither gives
the built-in default (the generation settings: the engine's `GenerationOptions`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llasm.assistant.vad import VadError, VadOptions


class SettingsError(ValueError):
    """A settings file or value that cannot be used; the message names the key and the fix."""


@dataclass
class Settings:
    # the command line's flags
    mic: bool = False
    mic_file: str | None = None
    no_tui: bool = False
    json: bool = False
    speak: bool = False
    ptt: bool = False
    input_device: str | None = None
    bundle: str | None = None
    transcribe: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    system: str | None = None
    threads: int | None = None
    hearing: str | None = None  # whisper | adaptor | embeddings (assistant/hearing.py HearingOptions.mode)
    language: str | None = None  # Whisper's language: a code (en, zh, ...) or auto
    n_best: int | None = None  # transcripts the LLM rescores (assistant/ctcbeam.py)
    fusion: float | None = None  # the LLM's weight inside the ctc beam search (0 = off; assistant/ctcbeam.py)
    ngram_fusion: float | None = None  # the bundle's hearing n-gram's weight there (0 = off; assistant/ngram.py)
    llm: str | None = None  # a chat GGUF that answers instead of the bundle's LLM (assistant/chatllm.py)
    device: str | None = None  # auto | cpu | cuda (assistant/devices.py; None: auto)
    # settings only
    whisper_decoder: str | None = None  # onnx | ct2: what runs Whisper's decoder (HearingOptions.whisper_decoder)
    barge_in: bool = True  # speech onset stops playback and generation while speaking
    realtime: bool = True  # --mic-file replays in real time (False: as fast as possible)
    voice: str | None = None  # hibari voice (the bundled one when None)
    history: bool = True  # keep chats in SQLite
    theme: str | None = None  # Textual theme name
    vad: VadOptions = field(default_factory=VadOptions)

    def generation_options(self) -> dict[str, Any]:
        """The generation settings that are set, by name."""
        out = {}
        for k in ("temperature", "top_p", "top_k", "max_tokens", "seed"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.stop:
            out["stop"] = tuple(self.stop)
        return out

    def hearing_overrides(self) -> dict[str, Any]:
        """The hearing settings that are set, as HearingOptions keys (Engine.load's `hearing`)."""
        given = {"mode": self.hearing, "language": self.language, "n_best": self.n_best, "fusion": self.fusion,
                 "ngram_fusion": self.ngram_fusion, "whisper_decoder": self.whisper_decoder}
        return {k: v for k, v in given.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = {f.name: f for f in fields(Settings)}
_VAD_FIELDS = {f.name: f for f in fields(VadOptions)}
_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "str | None": (str,),
    "float | None": (int, float),
    "int | None": (int,),
    "int": (int,),
    "float": (int, float),
    "list[str]": (list,),
}

def settings_path() -> Path:
    env = os.environ.get("LLASM_CONFIG")
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("llasm")) / "settings.toml"


def _check(where: str, key: str, value: Any, type_name: str) -> Any:
    allowed = _TYPES.get(type_name)
    if allowed is None:
        return value
    if type_name == "str | None" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # input_device = 3
    if isinstance(value, bool) and bool not in allowed:
        raise SettingsError(f"{where}: {key} must be {type_name.replace(' | None', '')}, not a boolean")
    if not isinstance(value, allowed):
        raise SettingsError(f"{where}: {key} must be {type_name.replace(' | None', '')}, got {value!r}")
    if type_name == "list[str]" and not all(isinstance(x, str) for x in value):
        raise SettingsError(f"{where}: {key} must be a list of strings, got {value!r}")
    return value


def _apply(settings: Settings, data: dict[str, Any], where: str) -> None:
    for key, value in data.items():
        if key == "vad":
            if not isinstance(value, dict):
                raise SettingsError(f"{where}: [vad] must be a table of VAD settings")
            for vk, vv in value.items():
                if vk not in _VAD_FIELDS:
                    raise SettingsError(f"{where}: unknown VAD setting {vk!r}; known: {', '.join(_VAD_FIELDS)}")
                setattr(settings.vad, vk, _check(where, f"vad.{vk}", vv, str(_VAD_FIELDS[vk].type)))
            continue
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise SettingsError(f"{where}: unknown setting {key!r}; known: {', '.join(_FIELDS)}")
        setattr(settings, name, _check(where, name, value, str(_FIELDS[name].type)))


def load_settings(path: str | Path | None = None) -> Settings:
    """Defaults overlaid with the TOML file (missing file: defaults)."""
    p = Path(path) if path is not None else settings_path()
    settings = Settings()
    if p.is_file():
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SettingsError(f"{p}: not valid TOML ({e}); fix or delete the file") from None
        _apply(settings, data, str(p))
    try:
        settings.vad.validate()
    except VadError as e:
        raise SettingsError(f"{p}: {e}") from None
    return settings


def merge_options(settings: Settings, options: dict[str, Any]) -> Settings:
    """Overlay command-line options: a value the user gave wins over the file.

    Not given means None, False for on/off flags, or an empty list (`llasm-assistant`'s flags default to
    these), so `temperature = 0.3` in the file stays unless `--temperature` is given; any other value was
    given and wins, also one equal to the built-in default (`--temperature 0`).
    """
    for key, value in options.items():
        name = key.replace("-", "_")
        if name in ("vad",) or value is None or value is False or value == []:
            continue
        if hasattr(value, "__fspath__"):
            value = str(value)
        if name.startswith("vad_") and name[4:] in _VAD_FIELDS:
            setattr(settings.vad, name[4:], value)
        elif name in _FIELDS:
            setattr(settings, name, value)
    try:
        settings.vad.validate()
    except VadError as e:
        raise SettingsError(str(e)) from None
    return settings


def write_default_settings(path: str | Path | None = None) -> Path:
    """Write a commented settings file with every key at its default (for `settings` discovery)."""
    p = Path(path) if path is not None else settings_path()
    s = Settings()
    lines = ["# llasm hands-free assistant settings; command-line flags override these", ""]
    for f in fields(Settings):
        if f.name == "vad":
            continue
        v = getattr(s, f.name)
        lines.append(f"# {f.name} = {_toml_value(v)}" if v is None else f"{f.name} = {_toml_value(v)}")
    lines += ["", "[vad]"]
    for f in fields(VadOptions):
        lines.append(f"{f.name} = {_toml_value(getattr(s.vad, f.name))}")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _toml_value(v: Any) -> str:
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)
