"""Typed factual check of system prompts for the default LLM: 30 simple questions with one key word each,
answered greedily by SmolLM2-135M-Instruct (Q8_0, as the default bundle runs it) under each system prompt;
prints how many answers contain their key, the misses, and whether "What color is grass?" gets "green"
(the default-model test's question, kept out of the score).

    .venv/bin/python scripts/system_prompt_check.py "Answer the question in one short sentence." "..."
"""

from __future__ import annotations

import argparse
import re

import llama_cpp
from llasm.assistant.basemodels import resolve

QA = [("What is the capital of Italy?", "rome"), ("What is the capital of Japan?", "tokyo"),
      ("What is the capital of Germany?", "berlin"), ("What is the capital of Spain?", "madrid"),
      ("How many days are in a week?", "seven|7"), ("How many hours are in a day?", "24|twenty-four"),
      ("What is frozen water called?", "ice"), ("Which planet do we live on?", "earth"),
      ("What animal says moo?", "cow"), ("What color is the sky on a clear day?", "blue"),
      ("What color is snow?", "white"), ("What do bees make?", "honey"),
      ("What is the largest ocean on Earth?", "pacific"), ("How many legs does a dog have?", "four|4"),
      ("What is the opposite of hot?", "cold"), ("What gas do plants take in from the air?", "carbon dioxide|co2"),
      ("What is the boiling point of water in Celsius?", "100"), ("Who wrote Romeo and Juliet?", "shakespeare"),
      ("What is two plus two?", "four|4"), ("What is the largest planet in the solar system?", "jupiter"),
      ("What color are bananas when they are ripe?", "yellow"), ("What do cows drink?", "water"),
      ("In which country is the Eiffel Tower?", "france"), ("What is the chemical symbol for water?", "h2o"),
      ("How many months are in a year?", "twelve|12"), ("What season comes after winter?", "spring"),
      ("What is the closest star to Earth?", "sun"), ("What color is a ripe tomato?", "red"),
      ("What is the capital of France?", "paris"), ("How many legs does a spider have?", "eight|8")]
GRASS = ("What color is grass?", "green")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("systems", nargs="+", help="system prompts to compare ('' = none)")
    ap.add_argument("--llm", default="default:smollm2-q8_0")
    args = ap.parse_args()
    llm = llama_cpp.Llama(str(resolve(args.llm)), n_ctx=512, n_threads=1, verbose=False)
    for system in args.systems:
        hits, misses, grass = 0, [], False
        for q, key in [*QA, GRASS]:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
            out = llm.create_chat_completion(msgs, max_tokens=40, temperature=0)
            answer = str(out["choices"][0]["message"]["content"]).replace("\n", " ")
            hit = re.search(rf"\b({key})\b", answer.lower()) is not None
            if (q, key) == GRASS:
                grass = hit
            elif hit:
                hits += 1
            else:
                misses.append(f"   miss: {q} -> {answer[:90]}")
        print(f"{hits}/{len(QA)}  grass: {'green' if grass else 'no green'}  system: {system!r}")
        print("\n".join(misses))


if __name__ == "__main__":
    main()
