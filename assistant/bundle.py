"""A bundle: what the assistant runs (see docs/architecture.md, "Bundle directory").

`Bundle.load(dir)` reads and validates `bundle.json`, resolves `default:...` model references through
`assistant.basemodels`, verifies the checksums (`basemodels.file_sha256_cached`: a file is hashed again after
any change to its inode, size, mtime or ctime, so a second start only stats the files) and checks every file's
header (GGUF header and tensor extents, safetensors header and length, CTranslate2 `model.bin` header, ONNX
non-empty). Anything wrong is a one-line `BundleError` that names the file and the fix. Nothing heavy is
loaded here; `assistant.engine` does that. A bundle.json without checksums still loads, with one line on stderr
saying its files go unchecked. `verify_files` hashes every file again, whatever the cache says
(`llasm-assistant --verify`).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .basemodels import file_sha256_cached
from .prompt import PromptTemplate

BUNDLE_FORMAT = "llasm-bundle"
BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
BUNDLE_ENV = "LLASM_BUNDLE"
DEFAULT_N_CTX = 2048


class BundleError(RuntimeError):
    """A missing, malformed, truncated or corrupt bundle; the message names the file and the fix."""


@dataclass(frozen=True)
class EncoderSpec:
    format: str  # "ct2" | "onnx"
    path: Path  # CT2 directory or .onnx file
    ref: str  # as written in bundle.json
    dtype: str = "int8"
    d_model: int = 0


LORA_TURNS = ("all", "transcribe")


@dataclass(frozen=True)
class LLMSpec:
    path: Path  # the GGUF file
    ref: str
    quant: str = ""
    lora: Path | None = None
    n_ctx: int = DEFAULT_N_CTX
    # the turns the LoRA runs for: "all", or "transcribe" (only `--transcribe` turns: answers, spoken or typed,
    # come from the plain LLM, whose typed answers stage 2 taught the spoken ones to match)
    lora_turns: str = "all"


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    sample_rate: int
    n_mels: int
    encoder: EncoderSpec
    adaptor: dict[str, Any]  # the adaptor config (type, stack, sizes) without "path"
    adaptor_path: Path
    llm: LLMSpec
    prompt: PromptTemplate
    stop: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)  # one line each, also printed once on stderr

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None, *, verify: bool = True) -> Bundle:
        """Read `root/bundle.json` (None: the default bundle) and check every file it names."""
        root, manifest_path, m = read_manifest(root)
        validate_manifest(m, manifest_path)
        enc, llm, ad = dict(m["encoder"]), dict(m["llm"]), dict(m["adaptor"])
        audio = dict(m.get("audio") or {})
        prompt = PromptTemplate.from_dict(m["prompt"])

        checksums = _checksums(m, manifest_path)
        warnings: list[str] = []
        if not checksums:
            warnings.append(f"{manifest_path} has no checksums: its files are not checked for corruption "
                            f"(re-export the bundle with `llasm-export bundle` to add them)")
            _warn_once(warnings[-1])
        if verify:
            for rel, digest in checksums.items():
                _verify_checksum(root, rel, digest)

        enc_format = enc["format"]
        enc_ref = str(enc.get("path", ""))
        enc_path = _resolve(root, enc_ref, "encoder.path", manifest_path)
        if enc_format == "ct2":
            check_ct2_dir(enc_path)
        else:
            check_onnx_file(enc_path)

        ad_ref = str(ad.pop("path", "adaptor.safetensors"))
        ad_path = _resolve(root, ad_ref, "adaptor.path", manifest_path)
        check_safetensors(ad_path)

        llm_ref = str(llm.get("path", ""))
        llm_path = _resolve(root, llm_ref, "llm.path", manifest_path)
        check_gguf(llm_path)
        lora_path = None
        if llm.get("lora"):
            lora_path = _resolve(root, str(llm["lora"]), "llm.lora", manifest_path)
            check_gguf(lora_path)
        lora_turns = str(llm.get("lora_turns", "all"))
        stop = m.get("stop", list(prompt.stop))
        return cls(
            root=root,
            manifest=m,
            sample_rate=int(audio.get("sample_rate", 16000)),
            n_mels=int(audio.get("n_mels", 80)),
            encoder=EncoderSpec(enc_format, enc_path, enc_ref, str(enc.get("dtype", "int8")),
                                int(enc.get("d_model", 0))),
            adaptor=ad,
            adaptor_path=ad_path,
            llm=LLMSpec(llm_path, llm_ref, str(llm.get("quant", "")), lora_path,
                        int(llm.get("n_ctx") or DEFAULT_N_CTX), lora_turns),
            prompt=prompt,
            stop=tuple(s for s in stop if s),
            warnings=tuple(warnings),
        )


# ---- the bundle.json schema ----------------------------------------------------------------------
# One table states every field bundle.json may hold: its kind, whether it must be there, and its range.
# `validate_manifest` checks a manifest against it before any value is read, so a wrong field is one line that
# names it ("bundle.json: llm.n_ctx must be a whole number >= 0, got 'lots': re-export the bundle") instead of a
# TypeError deep in the engine, or a wrong value that silently changes the answer (a prompt section that is not
# an object once loaded as an empty template). The adaptor and hearing sections are checked by their own
# readers (`AdaptorConfig.from_dict`, `HearingOptions.from_dict`), each the one definition of its fields.
# Unknown keys are errors where the table lists every key (a typo such as "n_cxt" would otherwise be ignored);
# "source" is free-form (what the export read), "adaptor" keeps extra keys as the adaptor config does.
@dataclass(frozen=True)
class Field:
    """One bundle.json field: `kind` is "str" (non-empty), "text" (a string, empty allowed), "int",
    "list[str]" or "object"; `required` inside a section (the top level's are `REQUIRED_SECTIONS`); `null` admits
    JSON null; `choices` and `minimum` bound the value."""

    kind: str
    required: bool = False
    null: bool = False
    choices: tuple[Any, ...] = ()
    minimum: int | None = None
    content_slot: bool = False  # a prompt format: "{content}" exactly once
    hex64: bool = False  # a sha256 hex digest


_PROMPT_FORMAT = Field("text", content_slot=True)
SCHEMA: dict[str, Field | dict[str, Field]] = {
    "format": Field("str", choices=(BUNDLE_FORMAT,)),
    "version": Field("int", choices=(BUNDLE_VERSION,)),
    # the runtime feeds the encoder 16 kHz log-mels; Whisper models take 80 (tiny ... large-v2) or 128 bins
    "audio": {"sample_rate": Field("int", choices=(16000,)), "n_mels": Field("int", choices=(80, 128))},
    "encoder": {"format": Field("str", required=True, choices=("ct2", "onnx")), "path": Field("str", required=True),
                "dtype": Field("str"), "d_model": Field("int", minimum=0)},
    "adaptor": Field("object"),
    # n_ctx 0 = DEFAULT_N_CTX
    "llm": {"path": Field("str", required=True), "quant": Field("text"), "lora": Field("text", null=True),
            "n_ctx": Field("int", minimum=0), "lora_turns": Field("str", choices=LORA_TURNS),
            "name": Field("text", null=True), "n_embd": Field("int", minimum=1),
            "n_vocab": Field("int", minimum=1), "vocab_sha256": Field("str", hex64=True)},
    "prompt": {"prefix": Field("text"), "system": _PROMPT_FORMAT, "user": Field("text", True, content_slot=True),
               "assistant": Field("text", True, content_slot=True), "generation": Field("text"),
               "default_system": Field("text", null=True), "stop": Field("list[str]"),
               "audio_separator": Field("text"), "transcribe": Field("text")},
    "stop": Field("list[str]"),
    "source": Field("object"),
    "checksums": Field("object", null=True),
    "hearing": Field("object", null=True),
    "mmproj": {"path": Field("str", required=True)},
}
REQUIRED_SECTIONS = ("format", "version", "encoder", "adaptor", "llm", "prompt")


def validate_manifest(m: dict[str, Any], manifest_path: Path) -> None:
    """Check every field of a parsed bundle.json against `SCHEMA` (and the adaptor, hearing and checksums
    sections against their readers); the first wrong field is a one-line BundleError naming it."""
    from .adaptor import AdaptorConfig, AdaptorError
    from .hearing import HearingOptions

    def fail(what: str) -> BundleError:
        return BundleError(f"{manifest_path}: {what}: re-export the bundle")

    def check(name: str, spec: Field, value: Any) -> None:
        if value is None and spec.null:
            return
        kind = spec.kind
        if kind in ("str", "text"):
            if not isinstance(value, str) or (kind == "str" and not value):
                raise fail(f"{name} must be {'a non-empty' if kind == 'str' else 'a'} string, got {_short(value)}")
            if spec.content_slot and value.count("{content}") != 1:
                raise fail(f"{name} must hold {{content}} exactly once, got {_short(value)}")
            if spec.hex64 and (len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value)):
                raise fail(f"{name} must be a sha256 hex digest (64 hex digits), got {_short(value)}")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail(f"{name} must be a whole number, got {_short(value)}")
            if spec.minimum is not None and value < spec.minimum:
                raise fail(f"{name} must be a whole number >= {spec.minimum}, got {value}")
        elif kind == "list[str]":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise fail(f"{name} must be a list of strings, got {_short(value)}")
        elif kind == "object" and not isinstance(value, dict):
            raise fail(f"{name} must be a JSON object, got {_short(value)}")
        if spec.choices and value not in spec.choices:
            raise fail(f"{name} must be {' or '.join(repr(c) for c in spec.choices)}, got {_short(value)}")

    def known(where: str, got: dict[str, Any], table: dict[str, Any]) -> None:
        extra = sorted(set(got) - set(table))
        if extra:
            raise fail(f"unknown {where}key(s) {', '.join(repr(k) for k in extra)} (known: {', '.join(table)})")

    known("", m, SCHEMA)
    for name, spec in SCHEMA.items():
        if name not in m:
            if name in REQUIRED_SECTIONS:
                raise BundleError(f"{manifest_path} lacks the {name!r} section: re-export the bundle")
            continue
        value = m[name]
        if isinstance(spec, Field):
            check(name, spec, value)
            continue
        if not isinstance(value, dict):
            raise fail(f"{name} must be a JSON object, got {_short(value)}")
        known(f"{name} ", value, spec)
        for key, field_spec in spec.items():
            if key in value:
                check(f"{name}.{key}", field_spec, value[key])
            elif field_spec.required:
                raise fail(f"{name}.{key} is missing")
    ad = dict(m["adaptor"])
    if "path" in ad:
        check("adaptor.path", Field("str"), ad.pop("path"))
    try:
        AdaptorConfig.from_dict(ad)
    except AdaptorError as e:
        raise fail(f"adaptor: {_one_line(e)}") from None
    try:
        HearingOptions.from_dict(m.get("hearing"))
    except ValueError as e:
        raise fail(_one_line(e)) from None
    _checksums(m, manifest_path)


def read_manifest(root: str | os.PathLike[str] | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """(bundle directory, its bundle.json, the parsed manifest) for `root` (None: the default bundle), the
    format and version checked."""
    root = default_bundle_dir() if root is None else Path(root).expanduser()
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist: pass --bundle with a directory "
                          f"made by `llasm-export bundle`")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing: {root} is not a bundle (make one with "
                          f"`llasm-export bundle CHECKPOINT OUT`)")
    try:
        m = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON ({_one_line(e)}): re-export the bundle") from None
    if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not a llasm bundle manifest (format must be "
                          f"{BUNDLE_FORMAT!r}): re-export the bundle")
    if m.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{manifest_path} has bundle version {m.get('version')!r}; this assistant reads "
                          f"version {BUNDLE_VERSION}: re-export the bundle or upgrade llasm")
    return root, manifest_path, m


def default_bundle_dir() -> Path:
    """`$LLASM_BUNDLE`, else the bundle shipped inside the package (`assistant/default_model/`)."""
    env = os.environ.get(BUNDLE_ENV)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parent / "default_model"
    if not (here / MANIFEST).is_file():
        raise BundleError(f"no default bundle is installed ({here / MANIFEST} is missing): pass --bundle DIR "
                          f"or set {BUNDLE_ENV}")
    return here


_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    """One line on stderr, once per process (a bundle loaded again says nothing new)."""
    if msg not in _warned:
        _warned.add(msg)
        print(f"llasm: warning: {msg}", file=sys.stderr, flush=True)


def _checksums(m: dict[str, Any], manifest_path: Path) -> dict[str, str]:
    """bundle.json's checksums: relative path -> sha256 hex ({} when the key is missing or empty)."""
    checksums = m.get("checksums", {})
    if checksums is None:
        return {}
    if not isinstance(checksums, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) == 64
                                                  for k, v in checksums.items()):
        raise BundleError(f"{manifest_path}: 'checksums' must map relative paths to sha256 hex strings, got "
                          f"{_short(checksums)}: re-export the bundle")
    for rel in checksums:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"{manifest_path}: checksums name {rel!r}, outside the bundle: re-export it")
    return checksums


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _resolve(root: Path, ref: str, what: str, manifest_path: Path) -> Path:
    from .basemodels import ModelResolutionError, is_default_ref, resolve

    if not ref:
        raise BundleError(f"{manifest_path}: {what} is empty; name a file in the bundle or a default:... model")
    if is_default_ref(ref):
        try:
            return resolve(ref)
        except ModelResolutionError as e:
            raise BundleError(f"{what} {ref}: {_one_line(e)}") from None
    path = (root / ref).resolve()
    if not path.exists():
        raise BundleError(f"{path} is missing ({what} in {manifest_path}): re-export the bundle")
    return path


# ---- checksums --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileCheck:
    """One file's (or one default model's) result in `verify_files`."""

    name: str  # a path, or a default:... model reference
    ok: bool
    detail: str  # "sha256 matches", or what is wrong and the fix


def verify_files(root: str | os.PathLike[str] | None = None,
                 report: Callable[[FileCheck], None] | None = None) -> list[FileCheck]:
    """Hash every file bundle.json's checksums list and every default:... model it names again, whatever the
    sha256 cache says (it is refreshed), and compare. `report` sees each result as it comes. Raises
    BundleError only when bundle.json itself cannot be read."""
    from .basemodels import ModelResolutionError, file_sha256, is_default_ref, remember_sha256, resolve

    root, manifest_path, m = read_manifest(root)
    checksums = _checksums(m, manifest_path)
    results: list[FileCheck] = []

    def add(check: FileCheck) -> None:
        results.append(check)
        if report is not None:
            report(check)

    if not checksums:
        add(FileCheck(str(manifest_path), False, "lists no checksums: nothing in the bundle can be checked; "
                                                 "re-export the bundle with `llasm-export bundle`"))
    for rel, expected in checksums.items():
        path = root / rel
        try:
            st = path.stat()
            digest = file_sha256(path)
        except OSError as e:
            add(FileCheck(str(path), False, f"cannot be read ({e.strerror or type(e).__name__}): re-export "
                                            f"the bundle or copy the file again"))
            continue
        if digest == expected.lower():
            remember_sha256(path, digest, st)
            add(FileCheck(str(path), True, "sha256 matches"))
        else:
            add(FileCheck(str(path), False, f"corrupt: sha256 {digest[:12]}... is not bundle.json's "
                                            f"{expected[:12]}...; re-export the bundle or copy the file again"))
    refs = [sec.get(key) for sec, key in ((m.get("encoder"), "path"), (m.get("llm"), "path"), (m.get("llm"), "lora"))
            if isinstance(sec, dict)]
    for ref in dict.fromkeys(r for r in refs if isinstance(r, str) and is_default_ref(r)):
        try:
            path = resolve(ref, verify=True)
            add(FileCheck(f"{ref} ({path})", True, "sha256 matches"))
        except ModelResolutionError as e:
            add(FileCheck(ref, False, _one_line(e)))
    return results


def print_verification(root: str | os.PathLike[str] | None = None, out: Any = None) -> bool:
    """`llasm-assistant --verify`: one line per file, "OK" or "FAILED" and why; True when every file is intact.
    `root` None: the bundle the assistant would run (the settings file's `bundle`, $LLASM_BUNDLE, the default)."""
    out = out or sys.stdout
    try:
        if root is None:
            from .settings import SettingsError, load_settings

            try:
                root = load_settings().bundle
            except SettingsError as e:
                print(f"FAILED  {_one_line(e)}", file=out, flush=True)
                return False
        checks = verify_files(root, lambda c: print(f"{'OK' if c.ok else 'FAILED':<6}  {c.name}"
                                                    f"{'' if c.ok else ': ' + c.detail}", file=out, flush=True))
    except BundleError as e:
        print(f"FAILED  {_one_line(e)}", file=out, flush=True)
        return False
    return all(c.ok for c in checks)


def _verify_checksum(root: Path, rel: str, expected: str) -> None:
    path = root / rel
    if not path.is_file():
        raise BundleError(f"{path} is missing (listed in {root / MANIFEST} checksums): re-export the bundle")
    digest = file_sha256_cached(path)
    if digest != expected.lower():
        raise BundleError(f"{path} is corrupt (sha256 {digest[:12]}... does not match bundle.json's "
                          f"{expected[:12]}...): re-export the bundle or copy the file again")


# ---- file headers -----------------------------------------------------------------------------------
def check_ct2_dir(path: Path) -> None:
    """A CTranslate2 model directory with a plausible `model.bin` header."""
    if not path.is_dir():
        raise BundleError(f"{path} is not a CTranslate2 model directory: re-export the encoder")
    model_bin = path / "model.bin"
    if not model_bin.is_file():
        raise BundleError(f"{model_bin} is missing: the CTranslate2 encoder is incomplete; re-export it")
    with open(model_bin, "rb") as fh:
        head = fh.read(4 + 2 + 64)
    if len(head) < 8:
        raise BundleError(f"{model_bin} is truncated ({len(head)} bytes): re-export the encoder")
    version, name_len = struct.unpack_from("<IH", head)
    name = head[6:6 + name_len].rstrip(b"\0")
    if not 1 <= version <= 64 or not name.isascii() or b"Spec" not in name:
        raise BundleError(f"{model_bin} is not a CTranslate2 model (bad header): re-export the encoder")


def check_onnx_file(path: Path) -> None:
    if not path.is_file():
        raise BundleError(f"{path} is not a file: the ONNX encoder is missing; re-export it")
    if path.stat().st_size < 16:
        raise BundleError(f"{path} is truncated ({path.stat().st_size} bytes): re-export the encoder")


def check_safetensors(path: Path) -> None:
    """safetensors: u64 header length, JSON header, tensor data that ends exactly at the end of the file."""
    if not path.is_file():
        raise BundleError(f"{path} is missing: re-export the bundle")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise BundleError(f"{path} is truncated ({size} bytes): re-export the adaptor")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            raise BundleError(f"{path} is not a safetensors file (bad header length): re-export the adaptor")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            raise BundleError(f"{path} is corrupt (unreadable safetensors header): re-export the adaptor") from None
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise BundleError(f"{path} is corrupt (tensor {name} has no data offsets): re-export the adaptor") from None
    if 8 + n + end > size:
        raise BundleError(f"{path} is truncated ({size} bytes, its header needs {8 + n + end}): re-export the "
                          f"adaptor")


_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the fastest-varying (row length)
    ggml_type: int
    offset: int  # absolute offset of the data in the file
    nbytes: int


# Our own header parser rather than gguf.GGUFReader (which export/ and training/ use): the runtime reads the
# header at every start (bundle checks, the prompt template, the token-embedding table), and GGUFReader builds
# a numpy view for every element of the vocabulary arrays. Measured on the shipped SmolLM2-135M Q4_1 GGUF
# (98 MB, 49k tokens and merges): GGUFReader 3.9-5.0 s, this parser 25-45 ms. It skips the arrays, which the
# runtime never reads. tests/test_bundle.py checks that both agree on every key and tensor of real GGUFs.
def read_gguf_index(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, GGUFTensorInfo]]:
    """Parse a GGUF's header: scalar/string metadata (arrays skipped) and the tensor table with absolute
    offsets. Raises BundleError naming the file when it is not a GGUF or is truncated."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path} is missing: re-export the bundle")
    size = path.stat().st_size
    if size < 24:
        raise BundleError(f"{path} is truncated ({size} bytes): re-export or re-download the GGUF")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != b"GGUF":
            raise BundleError(f"{path} is not a GGUF file (bad magic): re-export or re-download it")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
        if version not in (2, 3) or n_tensors > 1 << 20 or n_kv > 1 << 20:
            raise BundleError(f"{path} has an unsupported or corrupt GGUF header (version {version})")
        header = _GGUFHeader(path, mm, size)
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = header.read_str()
            value = header.read_value(header.unpack("<I")[0])
            if value is not None:
                meta[key] = value
        raw_tensors = [header.read_tensor_info() for _ in range(n_tensors)]
    align = int(meta.get("general.alignment", 32))
    data_start = -(-header.pos // align) * align
    return meta, {name: _tensor_info(path, size, name, dims, ttype, data_start + offset)
                  for name, dims, ttype, offset in raw_tensors}


_GGUF_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class _GGUFHeader:
    """A cursor over a GGUF's header bytes; every read checks the file holds it (BundleError otherwise)."""

    def __init__(self, path: Path, mm: mmap.mmap, size: int) -> None:
        self.path, self.mm, self.size = path, mm, size
        self.pos = 24  # after magic, version, tensor count and key count

    def need(self, n: int) -> None:
        if self.pos + n > self.size:
            raise BundleError(f"{self.path} is truncated inside its header: re-export or re-download the GGUF")

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        n = struct.calcsize(fmt)
        self.need(n)
        out = struct.unpack_from(fmt, self.mm, self.pos)
        self.pos += n
        return out

    def read_str(self) -> str:
        (n,) = self.unpack("<Q")
        self.need(n)
        s = self.mm[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s

    def read_value(self, vtype: int) -> Any:
        """A metadata value; None for an array, which is skipped."""
        if vtype == _GGUF_STRING:
            return self.read_str()
        if vtype == _GGUF_ARRAY:
            etype, count = self.unpack("<IQ")
            if etype == _GGUF_STRING:  # the vocabulary: 100k strings, skipped in a tight loop
                pos, mm = self.pos, self.mm
                for _ in range(count):
                    if pos + 8 > self.size:
                        self.pos = pos
                        self.need(8)  # raises: the file ends inside the array
                    pos += 8 + struct.unpack_from("<Q", mm, pos)[0]
                self.pos = pos
                self.need(0)
            elif etype in _GGUF_SCALAR:
                self.pos += count * _GGUF_SCALAR[etype]
                self.need(0)
            else:
                raise BundleError(f"{self.path} is corrupt (array of unknown type {etype}): re-export it")
            return None
        if vtype not in _GGUF_SCALAR:
            raise BundleError(f"{self.path} is corrupt (metadata of unknown type {vtype}): re-export it")
        return self.unpack(_GGUF_FORMATS[vtype])[0]

    def read_tensor_info(self) -> tuple[str, tuple[int, ...], int, int]:
        """(name, dims, ggml type, offset from the data start) of the next tensor."""
        name = self.read_str()
        (n_dims,) = self.unpack("<I")
        self.need(8 * n_dims + 12)
        dims = self.unpack(f"<{n_dims}Q")
        ttype, offset = self.unpack("<IQ")
        return name, tuple(int(d) for d in dims), int(ttype), int(offset)


def _tensor_info(path: Path, size: int, name: str, dims: tuple[int, ...], ttype: int, offset: int) -> GGUFTensorInfo:
    """A tensor's byte size from its ggml type, checked to lie inside the file."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        raise BundleError(f"{path}: tensor {name} has unknown ggml type {ttype}; upgrade gguf/llasm") from None
    n_el = 1
    for d in dims:
        n_el *= d
    nbytes = n_el // block * type_size
    if offset + nbytes > size:
        raise BundleError(f"{path} is truncated (tensor {name} ends at byte {offset + nbytes}, the file "
                          f"has {size}): re-export or re-download the GGUF")
    return GGUFTensorInfo(name, dims, ttype, offset, nbytes)


def check_gguf(path: Path) -> None:
    """A GGUF whose header parses and whose tensors all lie inside the file."""
    read_gguf_index(path)


# ---- writing bundles by hand (tests, the default bundle) ------------------------------------------------
def prompt_from_gguf(path: str | os.PathLike[str], *, bos_token: str = "", eos_token: str = "") -> PromptTemplate:
    """The PromptTemplate of a GGUF's own chat template (`tokenizer.chat_template`), rendered with jinja2
    the way transformers renders it. Pass the BOS/EOS strings for templates that print them (Llama 2/3);
    ChatML templates (SmolLM2) do not."""
    import jinja2

    meta, _ = read_gguf_index(path)
    source = meta.get("tokenizer.chat_template")
    if not source:
        raise BundleError(f"{path} has no tokenizer.chat_template: write the prompt template by hand")
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(str(source))

    class _Renderer:
        def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> str:
            return template.render(messages=conversation,
                                   add_generation_prompt=kwargs.get("add_generation_prompt", False),
                                   bos_token=bos_token, eos_token=eos_token)

    return PromptTemplate.from_chat_template(_Renderer(), bos_token=bos_token or None,
                                             eos_token=eos_token or None)


def write_bundle(out: str | os.PathLike[str], *, encoder: str, llm: str, adaptor_config: dict[str, Any],
                 adaptor_tensors: dict[str, Any], prompt: PromptTemplate, encoder_format: str = "ct2",
                 encoder_dtype: str = "int8", d_model: int = 0, n_mels: int = 80, n_ctx: int = DEFAULT_N_CTX,
                 quant: str = "", lora: str | None = None, stop: list[str] | None = None,
                 llm_identity: dict[str, Any] | None = None) -> Path:
    """Write a bundle directory: `adaptor.safetensors` + `bundle.json` (with sha256 of every local file).

    `encoder` and `llm` are paths relative to `out` (files already placed there) or `default:...` refs.
    `llm_identity`: which LLM the adaptor was trained for (`assistant.llm.gguf_identity`), into the llm section."""
    from .adaptor import save_adaptor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_adaptor(out / "adaptor.safetensors", adaptor_tensors)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "audio": {"sample_rate": 16000, "n_mels": n_mels},
        "encoder": {"format": encoder_format, "path": encoder, "dtype": encoder_dtype, "d_model": d_model},
        "adaptor": {**adaptor_config, "path": "adaptor.safetensors"},
        "llm": {"path": llm, "quant": quant, "lora": lora, "n_ctx": n_ctx, **(llm_identity or {})},
        "prompt": prompt.to_dict(),
        "stop": list(stop if stop is not None else prompt.stop),
        "checksums": {},
    }
    files: list[Path] = []
    for ref in (encoder, llm, lora, "adaptor.safetensors"):
        if ref and not ref.startswith("default:"):
            p = out / ref
            files.extend(sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])
    for f in files:
        manifest["checksums"][f.relative_to(out).as_posix()] = file_sha256_cached(f)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return out
