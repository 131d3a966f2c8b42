"""Compare a bundle's run-time choices on held-out clips: the ctc mix (`topk`) and what `--transcribe` asks.

For every (topk, instruction) pair: WER of the transcription through the LLM, next to the ctc head's own
transcript (the same for every pair). With `--questions`, also how often the spoken answer equals the
answer to the typed *heard* text (how faithfully the LLM reads the adaptor's output as text), per topk.

    .venv/bin/python scripts/runtime_choices.py --asr dev/eval.jsonl --n 60 --topk 8 --topk 1 \
        --instruction "Transcribe the audio." --instruction "Repeat the sentence above word for word."
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from llasm.assistant.audio import load_audio
from llasm.assistant.engine import Engine, GenerationOptions
from llasm.assistant.evaluate import AGREE_SIMILARITY, read_asr, read_questions, similarity, wer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: the default bundle)")
    ap.add_argument("--asr", type=Path, required=True, help="held-out ASR manifest (JSON lines)")
    ap.add_argument("--questions", type=Path, default=None, help="held-out spoken questions (optional)")
    ap.add_argument("--n", type=int, default=60, help="clips (and questions) to use")
    ap.add_argument("--topk", type=int, action="append", help="ctc tokens mixed per segment (repeatable)")
    ap.add_argument("--instruction", action="append", help="what --transcribe asks (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    eng = Engine.load(args.bundle, n_threads=args.threads)
    if eng.adaptor.config.type != "ctc" and args.topk:
        raise SystemExit("--topk applies to ctc adaptors only")
    topks = args.topk or [eng.adaptor.config.topk]
    instructions = args.instruction or [eng.template.transcribe]
    clips = read_asr(args.asr, args.n)
    audio = [load_audio(c.audio) for c in clips]
    refs = [c.text for c in clips]
    greedy = GenerationOptions(max_tokens=64, temperature=0.0)
    base_cfg, base_tpl = eng.adaptor.config, eng.template
    for k in topks:
        eng.adaptor.config = dataclasses.replace(base_cfg, topk=k)
        for ins in instructions:
            eng.template = dataclasses.replace(base_tpl, transcribe=ins)
            hyps, heard = [], []
            for a in audio:
                eng.new_chat()
                d = eng.ask(audio=a, transcribe=True, options=greedy)
                hyps.append(d.answer)
                heard.append(d.heard or "")
            print(f"topk={k} {ins!r}: WER through the LLM {wer(refs, hyps):.3f}, ctc heard {wer(refs, heard):.3f}",
                  flush=True)
        if args.questions:
            agree = []
            for c in read_questions(args.questions, args.n):
                eng.new_chat()
                spoken = eng.ask(audio=load_audio(c.audio), options=greedy)
                eng.new_chat()
                typed = eng.ask(text=spoken.heard or " ", options=greedy)
                agree.append(similarity(spoken.answer, typed.answer) >= AGREE_SIMILARITY)
            print(f"topk={k}: spoken answer = answer to the typed heard text: {sum(agree) / len(agree):.0%}",
                  flush=True)
    eng.close()


if __name__ == "__main__":
    main()
