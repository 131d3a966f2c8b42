"""Spoken-instruction datasets: generated requests answered by the text LLM, and converted user data.

`build_instructions` follows the paper's LLaSM-Audio-Instructions construction offline: requests from
`prompts.generate_requests`, replies from the text LLM (`replies.LlamaReplier`, greedy), human turns spoken
by the TTS voices. `build_converted` speaks the human turns of a user's own LLaVA / ShareGPT-style
conversations (ShareGPT, WizardLM, GPT-4-LLM / Alpaca `instruction`-`input`-`output` records).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llasm.training.datagen.build import (
    BuildOptions,
    Conversation,
    DataGenError,
    _progress,
    build_conversations,
    check_meta,
    clip_split,
)
from llasm.training.datagen.prompts import TEMPLATE_SETS, generate_requests
from llasm.training.datagen.replies import LlamaReplier, Replier, ReplySettings

HUMAN_ROLES = {"human", "user", "question", "instruction"}
GPT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "bing", "model", "answer", "response"}


def build_instructions(
    out: Path | str,
    count: int,
    opts: BuildOptions | None = None,
    *,
    multi_turn: float = 0.3,
    reply: ReplySettings | None = None,
    replier: Replier | None = None,
    replies: bool = True,
    templates: str = "base",
) -> dict[str, Any]:
    """`count` spoken conversations with LLM replies in `out`. `replier` overrides the LLM (for tests).
    `replies=False` speaks the requests only (no LLM, no gpt turns): held-out questions for evaluation, or
    spoken questions as speech-recognition pairs for stage 1. `templates` names the request template set
    (`prompts.TEMPLATE_SETS`)."""
    opts = opts or BuildOptions()
    reply = reply or ReplySettings(seed=opts.seed)
    if count <= 0:
        raise DataGenError(f"--count must be positive, not {count}")
    if templates not in TEMPLATE_SETS:
        raise DataGenError(f"--templates must be one of {', '.join(TEMPLATE_SETS)}, not {templates!r}")
    root = Path(out)
    reply_meta: dict[str, Any] | None = (
        reply.to_dict() | {"replier": "llama.cpp chat completion" if replier is None else type(replier).__name__}
        if replies else None)
    # "core-text": held-out conversations take only held-out request texts (keyed without the opener), so no
    # held-out question is ever spoken in training; builds from before that rule do not resume into this one
    settings = {"multi_turn": multi_turn, "reply_generation": reply_meta, "text_split": "core-text"}
    if templates != "base":  # builds from before template sets existed used the base set and resume as they are
        settings["templates"] = templates
    check_meta(root, "instructions", opts.plan_settings() | settings)
    splits = [clip_split(opts.seed, i, opts.eval_fraction) for i in range(count)]
    by_split = {s: iter(generate_requests(splits.count(s), seed=opts.seed, multi_turn=multi_turn, split=s,
                                               templates=templates))
                for s in ("train", "eval")}
    requests = [next(by_split[s]) for s in splits]
    cache_path = root / "replies.jsonl"
    cache: dict[str, list[str]] = {}
    asked: dict[str, list[str]] = {}
    if cache_path.exists():
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                cache[r["id"]] = r["replies"]
                if "turns" in r:  # what was asked: a reply is reused only for the same question
                    asked[r["id"]] = r["turns"]
    ids = [f"inst{i:06d}" for i in range(count)]
    todo = [i for i, cid in enumerate(ids)
            if cid not in cache or asked.get(cid, requests[i].turns) != requests[i].turns] if replies else []
    model_file = None
    if todo and replier is None:
        replier = LlamaReplier(reply)
        model_file = replier.model_name
    with _progress(opts.progress, f"LLM replies ({count - len(todo)} cached)", len(todo)) as advance, \
            open(cache_path, "a", encoding="utf-8") as f:
        for i in todo:
            history: list[dict[str, str]] = []
            answers = []
            for turn in requests[i].turns:
                history.append({"role": "user", "content": turn})
                answer = replier(history) if replier is not None else ""
                if not answer:
                    answer = "I'm not sure."
                history.append({"role": "assistant", "content": answer})
                answers.append(answer)
            cache[ids[i]] = answers
            f.write(json.dumps({"id": ids[i], "turns": requests[i].turns, "replies": answers}, ensure_ascii=False)
                    + "\n")
            f.flush()
            advance(1)
    convs = []
    for i, req in enumerate(requests):
        turns = []
        answers = cache[ids[i]] if replies else [None] * len(req.turns)
        for q, a in zip(req.turns, answers, strict=True):
            turns += [{"from": "human", "value": q}] + ([{"from": "gpt", "value": a}] if a is not None else [])
        convs.append(Conversation(ids[i], turns))
    kinds: dict[str, int] = {}
    for r in requests:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    extra = {"count": count, "request_kinds": kinds, "reply_model_file": model_file, "multi_turn_conversations": sum(len(r.turns) > 1 for r in requests)}
    return build_conversations(root, convs, opts, "instructions", settings, extra, splits=splits)


# --------------------------------------------------------------------------------------------------
# conversion of user conversations


_CODE = re.compile(r"```|\bdef |\{|\}|<[a-z/][^>]*>|https?://|\$\$|\\\(|\|---")


def speakable(text: str, max_chars: int) -> bool:
    """Whether a human turn can be read aloud: short enough, no code, markup or URLs."""
    return 0 < len(text) <= max_chars and not _CODE.search(text) and sum(c.isalpha() for c in text) >= 0.5 * len(text)


def _records(path: Path) -> list[Any]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataGenError(f"cannot read {path}: {e.strerror}; check the path") from None
    raw = raw.strip()
    if not raw:
        raise DataGenError(f"{path} is empty; pass a JSON or JSON-lines file of conversations")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise DataGenError(f"{path} is neither JSON nor JSON lines (line {e.lineno}: {e.msg})") from None
    if isinstance(data, dict):
        data = data["data"] if isinstance(data.get("data"), list) else [data]
    if not isinstance(data, list):
        raise DataGenError(f"{path}: expected a list of conversations, found {type(data).__name__}")
    return data


def parse_conversations(path: Path | str, *, max_chars: int = 300, limit: int | None = None) -> tuple[list[Conversation], dict[str, int]]:
    """Read LLaVA / ShareGPT (`conversations` with `from`/`value` or `role`/`content`) or Alpaca-style records.

    Human turns that cannot be spoken (too long, code, markup) stay typed (`"speak": "0"`). Returns the
    conversations and counts of what was skipped.
    """
    path = Path(path)
    stats = {"records": 0, "skipped_malformed": 0, "typed_turns": 0, "spoken_turns": 0}
    out: list[Conversation] = []
    for n, rec in enumerate(_records(path)):
        stats["records"] += 1
        turns: list[dict[str, str]] = []
        if isinstance(rec, dict) and isinstance(rec.get("conversations") or rec.get("messages") or rec.get("items"), list):
            for m in rec.get("conversations") or rec.get("messages") or rec.get("items"):
                if not isinstance(m, dict):
                    continue
                role = str(m.get("from", m.get("role", ""))).lower()
                value = m.get("value", m.get("content", ""))
                if not isinstance(value, str):
                    continue
                value = value.replace("<image>", "").strip()
                if role in HUMAN_ROLES:
                    turns.append({"from": "human", "value": value})
                elif role in GPT_ROLES:
                    turns.append({"from": "gpt", "value": value.strip()})
        elif isinstance(rec, dict) and isinstance(rec.get("instruction"), str) and isinstance(rec.get("output"), str):
            q = rec["instruction"].strip()
            if isinstance(rec.get("input"), str) and rec["input"].strip():
                q = f"{q}\n{rec['input'].strip()}"
            turns = [{"from": "human", "value": q}, {"from": "gpt", "value": rec["output"].strip()}]
        # keep strict alternation human, gpt, human, gpt ... starting with a human turn
        clean: list[dict[str, str]] = []
        for t in turns:
            if not t["value"]:
                continue
            if (not clean and t["from"] == "human") or (clean and clean[-1]["from"] != t["from"]):
                clean.append(t)
        if clean and clean[-1]["from"] == "human":
            clean.pop()
        if not clean:
            stats["skipped_malformed"] += 1
            continue
        for t in clean:
            if t["from"] == "human":
                if speakable(t["value"], max_chars):
                    stats["spoken_turns"] += 1
                else:
                    t["speak"] = "0"
                    stats["typed_turns"] += 1
        cid = re.sub(r"[^A-Za-z0-9_-]+", "_", str(rec.get("id", f"conv{n:06d}")))[:40] or f"conv{n:06d}"
        out.append(Conversation(cid, clean))
        if limit is not None and len(out) >= limit:
            break
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):  # ids must be unique file names
        for i, c in enumerate(out):
            c.id = f"{c.id}_{i}"
    return out, stats


def build_converted(
    src: Path | str, out: Path | str, opts: BuildOptions | None = None, *, max_chars: int = 300, limit: int | None = None
) -> dict[str, Any]:
    opts = opts or BuildOptions()
    convs, stats = parse_conversations(src, max_chars=max_chars, limit=limit)
    if not convs:
        raise DataGenError(f"no usable conversations in {src}: expected LLaVA/ShareGPT or Alpaca-style records")
    settings = {"source": str(Path(src).resolve()), "max_chars": max_chars, "limit": limit}
    return build_conversations(out, convs, opts, "converted", settings, {"source_stats": stats})
