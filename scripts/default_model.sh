#!/usr/bin/env bash
# The default model's recipe, end to end on a CPU: data -> encoder states -> ctc adaptor (stage 1) -> LoRA
# (stage 2) -> bundle -> eval.
#   scripts/default_model.sh [WORK_DIR]      (make default-model)
# Seeded and resumable: every step skips or resumes what an earlier run finished.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-runs/default-model}"
bin=.venv/bin
steps="${STEPS:-2400}"
clips="${CLIPS:-8000}"
wide="${WIDE_CLIPS:-6000}"
q_asr="${QUESTION_CLIPS:-3000}"      # spoken training questions for stage 1b
q_wide="${WIDE_QUESTION_CLIPS:-9000}"  # ... and more of them in the wide voice set
q_wide2="${WIDE_QUESTION_CLIPS_2:-12000}"  # ... and 12,000 more
q_wide3="${WIDE_QUESTION_CLIPS_3:-24000}"  # ... and 24,000 more
q_everyday="${EVERYDAY_QUESTION_CLIPS:-24000}"  # ... and 24,000 from the everyday template set
steps1b="${STAGE1B_STEPS:-8000}"
steps1c="${STAGE1C_STEPS:-4000}"
steps1d="${STAGE1D_STEPS:-4000}"
q_train="${TRAIN_QUESTIONS:-520}"    # spoken questions with replies for stage 2
mix_asr="${MIX_ASR:-2000}"           # transcription requests in the stage-2 mix
mkdir -p "$work"
start=$(date +%s)
# Each step's start time and command go to $work/steps.tsv (a resumed run appends); `scripts/recipe_times.py
# $work` prints the wall time of each step and phase and plots them.
printf '%s\t%s\n' "$start" "# run starts" >> "$work/steps.tsv"
trap 'case "$BASH_COMMAND" in "\$bin/"*|export_bundle*|OMP_NUM_THREADS=*|cat\ *|wait\ *) printf "%s\t%s\n" "$(date +%s)" "$BASH_COMMAND" >> "$work/steps.tsv";; esac' DEBUG

# 1. 8,000 English ASR clips (espeak-ng voices + hibari, augmented); the eval split uses held-out voices.
$bin/llasm-train data asr --out "$work/asr" --count "$clips" --seed 0 --quiet
# 1b. 6,000 more clips from a wider set of voices (espeak-ng's other human-sounding variants: 385 training voices
#     instead of 100; held-out accents and variants stay out), mostly espeak-ng.
$bin/llasm-train data asr --out "$work/asr-wide" --count "$wide" --seed 1 --eval-fraction 0.02 \
  --hibari-fraction 0.05 --voice-set wide --quiet
# 2. Held-out spoken questions for the agreement and latency measurements (no replies needed). Their texts come
#    from the held-out side of the question text split, which no training build ever speaks.
$bin/llasm-train data instructions --out "$work/questions" --count 120 --eval-fraction 0.5 --multi-turn 0 \
  --no-replies --seed 7 --quiet
# 2b. The same held-out voices and texts in the rooms and microphones training knows ("matched" acoustics),
#     next to the default split's unseen ones (telephone band, large rooms, brown noise, hum).
$bin/llasm-train data asr --out "$work/asr-matched" --count 140 --eval-fraction 0.9 --seed 11 \
  --eval-acoustics matched --quiet
$bin/llasm-train data instructions --out "$work/questions-matched" --count 120 --eval-fraction 0.5 \
  --multi-turn 0 --no-replies --seed 7 --eval-acoustics matched --quiet
# 2c. ... and with no room, microphone or noise at all ("clean" acoustics): what the voices alone cost.
$bin/llasm-train data asr --out "$work/asr-clean" --count 140 --eval-fraction 0.9 --seed 11 \
  --eval-acoustics clean --quiet
$bin/llasm-train data instructions --out "$work/questions-clean" --count 120 --eval-fraction 0.5 \
  --multi-turn 0 --no-replies --seed 7 --eval-acoustics clean --quiet
# 2d. 3,000 spoken training questions (training side of the text split), heard as speech-recognition pairs by
#     stage 1b: the ASR sentences lack many words people ask with ("Hi", "recipe", "Suggest").
$bin/llasm-train data instructions --out "$work/questions-asr" --count "$q_asr" --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 31 --quiet
# 2e-2g. 45,000 more in the wide voice set: the ctc head hears a word about as often as its training transcripts
#     say it, so more spoken questions make it hear more questions word for word (docs/model-card.md). Three
#     seeded builds, so that the recipe reproduces the shipped adaptor bit for bit.
$bin/llasm-train data instructions --out "$work/questions-asr-wide" --count "$q_wide" --eval-fraction 0 \
  --multi-turn 0 --no-replies --seed 41 --voice-set wide --quiet
$bin/llasm-train data instructions --out "$work/questions-asr-wide2" --count "$q_wide2" --eval-fraction 0 \
  --multi-turn 0 --no-replies --seed 51 --voice-set wide --quiet
$bin/llasm-train data instructions --out "$work/questions-asr-wide3" --count "$q_wide3" --eval-fraction 0 \
  --multi-turn 0 --no-replies --seed 61 --voice-set wide --quiet
# 2h. 24,000 from the everyday template set: other kinds of request (numbers, words, time, the computer, the
#     home, talk with the assistant, ...) in other phrasings, so the head hears questions no base template says
#     (docs/model-card.md).
$bin/llasm-train data instructions --out "$work/questions-everyday" --count "$q_everyday" --eval-fraction 0 \
  --multi-turn 0 --no-replies --seed 71 --voice-set wide --templates everyday --quiet
# 2i. Generated accents and speakers (`--voice-set random`): 16,000 questions, 8,000 everyday ones and
#     4,000 ASR sentences spoken in 60 generated English accents (one training accent's pronunciation rules, another's
#     phoneme table, consistent pronunciation changes) by espeak-ng variants and 300 generated speakers; and, so
#     stage 1c keeps what it knows, 6,000 + 3,000 questions and 2,000 sentences more in the wide voice set.
$bin/llasm-train data instructions --out "$work/accents-questions" --count 16000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 81 --voice-set random --quiet
$bin/llasm-train data instructions --out "$work/accents-everyday" --count 8000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 91 --voice-set random --templates everyday --quiet
$bin/llasm-train data asr --out "$work/accents-asr" --count 4000 --eval-fraction 0 --seed 3 --hibari-fraction 0.05 \
  --voice-set random --quiet
$bin/llasm-train data instructions --out "$work/replay-questions" --count 6000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 101 --voice-set wide --quiet
$bin/llasm-train data instructions --out "$work/replay-everyday" --count 3000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 111 --voice-set wide --templates everyday --quiet
$bin/llasm-train data asr --out "$work/replay-asr" --count 2000 --eval-fraction 0 --seed 4 --hibari-fraction 0.05 \
  --voice-set wide --quiet
# 2j. Foreign accents (`--voice-set foreign`): 12,000 questions and 6,000 everyday ones in the random
#     set plus 60 foreign accents (a training accent's pronunciation rules, spoken through one of 23 other
#     languages' phoneme tables with English vowels mapped to the table's own). No ASR sentences: theirs would add
#     768 tokens to the ctc shortlist, 3 MB past the 25 MB the trained parts may take.
$bin/llasm-train data instructions --out "$work/foreign-questions" --count 12000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 121 --voice-set foreign --quiet
$bin/llasm-train data instructions --out "$work/foreign-everyday" --count 6000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 131 --voice-set foreign --templates everyday --quiet
# 3. Frozen encoder states, computed once with the encoder the bundle runs (CTranslate2 int8).
#    Incremental: a rerun encodes only the clips the cache lacks.
# The ASR clips and the spoken training questions stage 1b hears (a new data step joins here once).
asr_train="$work/asr/train.jsonl,$work/asr-wide/train.jsonl"
questions_asr="$work/questions-asr/train.jsonl,$work/questions-asr-wide/train.jsonl,$work/questions-asr-wide2/train.jsonl,$work/questions-asr-wide3/train.jsonl,$work/questions-everyday/train.jsonl"
accents="$work/accents-questions/train.jsonl,$work/accents-everyday/train.jsonl,$work/accents-asr/train.jsonl,$work/replay-questions/train.jsonl,$work/replay-everyday/train.jsonl,$work/replay-asr/train.jsonl"
foreign="$work/foreign-questions/train.jsonl,$work/foreign-everyday/train.jsonl"
cat "$work/asr/train.jsonl" "$work/asr/eval.jsonl" > "$work/asr/all.jsonl"
$bin/llasm-train cache-states \
  --data "$work/asr/all.jsonl,$work/asr-wide/train.jsonl,$questions_asr,$accents,$foreign" \
  --out "$work/states" --engine ct2
# 4. Stage 1 of the default recipe: the ctc adaptor, trained without the LLM in the loop. --ctc-shortlist: the
#    training softmax runs over the training transcripts' tokens only, the ones the bundle's head scores (2.4x
#    faster steps; held-out hearing and agreement the same, docs/training.md).
$bin/llasm-train stage1 --recipe cpu --adaptor ctc --objective ctc --stack 4 --ctc-shortlist \
  --data "$work/asr/train.jsonl,$work/asr-wide/train.jsonl" --eval-data "$work/asr/eval.jsonl" \
  --state-cache "$work/states" --out "$work/stage1" --max-steps "$steps" --batch-size 16 --lr 2e-3 \
  --warmup-steps 50 --log-every 10 --eval-every 200 --save-every 50 --seed 0
# 4b. Stage 1b: 8,000 more steps with the 72,000 spoken questions added (about 84 % of the clips), at half the rate.
$bin/llasm-train stage1 --recipe cpu --init "$work/stage1/final" --adaptor ctc --objective ctc --stack 4 \
  --hidden 2048 --ctc-shortlist \
  --data "$asr_train,$questions_asr" \
  --eval-data "$work/asr/eval.jsonl" --state-cache "$work/states" --out "$work/stage1b" --max-steps "$steps1b" \
  --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0
# 4c. Stage 1c: 4,000 steps more from stage 1b on the generated accents and the replay, at 3e-4, because the
#     held-out accents are what the head mishears most (docs/model-card.md).
$bin/llasm-train stage1 --recipe cpu --init "$work/stage1b/final" --adaptor ctc --objective ctc --stack 4 \
  --hidden 2048 --ctc-shortlist --data "$accents" --eval-data "$work/asr/eval.jsonl" --state-cache "$work/states" \
  --out "$work/stage1c" --max-steps "$steps1c" --batch-size 16 --lr 3e-4 --warmup-steps 20 --log-every 10 \
  --eval-every 500 --save-every 50 --seed 0
# 4d. Stage 1d: 4,000 steps more from stage 1c on the foreign accents and stage 1c's clips, at 3e-4: every English
#     vowel said through another language's table, which the generated accents of 1c never do.
$bin/llasm-train stage1 --recipe cpu --init "$work/stage1c/final" --adaptor ctc --objective ctc --stack 4 \
  --hidden 2048 --ctc-shortlist --data "$foreign,$accents" --eval-data "$work/asr/eval.jsonl" \
  --state-cache "$work/states" --out "$work/stage1d" --max-steps "$steps1d" --batch-size 16 --lr 3e-4 \
  --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0
# 5. Stage 2: a small LoRA on the LLM (rank 8, attention only), trained on what the bundle's prompt sends, each
#    under the bundle's system prompt. The LLM reads each ctc segment as its most likely token (--topk 1), so
#    the adaptor is frozen.
#    - 2,000 transcription requests ("Repeat the sentence above word for word." after the audio). The reply is
#      what the stage-1 adaptor hears, with cross-entropy: the LLM learns to read back what it is given.
#    - 520 spoken questions: KL to the same LLM reading the typed question (the LoRA switched off).
sys_prompt="Answer the question in one short sentence."
instruction="Repeat the sentence above word for word."
export_bundle() {  # CHECKPOINT OUT [extra flags]: the adaptor (+ LoRA); encoder and LLM come from their packages
  local vocab=() manifest
  for manifest in ${asr_train//,/ } ${questions_asr//,/ } ${accents//,/ } ${foreign//,/ }; do vocab+=(--ctc-vocab "$manifest"); done
  $bin/llasm-export bundle "$1" "$2" --force "${vocab[@]}" --system-prompt "$sys_prompt" --ctc-topk 1 \
    --transcribe-instruction "$instruction" --llm-quant q8_0 "${@:3}"
}
export_bundle "$work/stage1d/final" "$work/bundle-stage1"
$bin/llasm-train data instructions --out "$work/questions-train" --count "$q_train" --eval-fraction 0 --multi-turn 0 \
  --max-tokens 40 --seed 21 --quiet
$bin/llasm-train cache-states --data "$work/questions-train/train.jsonl" --out "$work/states" --engine ct2
$bin/llasm-train data mix --out "$work/mix/train.jsonl" --asr "$asr_train" \
  --asr-count "$mix_asr" --conversations "$work/questions-train/train.jsonl" --system-prompt "$sys_prompt" \
  --transcribe-instruction "$instruction" --heard-from "$work/bundle-stage1" --seed 0 --quiet
$bin/llasm-train data mix --out "$work/mix/eval.jsonl" --asr "$work/asr/eval.jsonl" --system-prompt "$sys_prompt" \
  --transcribe-instruction "$instruction" --seed 0
#    What the frozen stage-1d adaptor hears in every stage-2 clip is computed once (0.4 MB): stage 2 reads it in
#    place of the audio and the states (the same training, number for number), so this step also runs as it is
#    on a GPU machine given only the manifests, this file, the stage-1d checkpoint and the LLM.
$bin/llasm-train cache-heard --init "$work/stage1d/final" --data "$work/mix/train.jsonl,$work/mix/eval.jsonl" \
  --state-cache "$work/states" --out "$work/stage2-heard.json"
$bin/llasm-train stage2 --recipe cpu --init "$work/stage1d/final" --topk 1 --llm-weights lora --lora-r 8 \
  --lora-targets q_proj,k_proj,v_proj,o_proj --loss kl --data "$work/mix/train.jsonl" \
  --eval-data "$work/mix/eval.jsonl" --heard-cache "$work/stage2-heard.json" --out "$work/stage2" --batch-size 8 \
  --max-steps "${STAGE2_STEPS:-480}" --lr 5e-4 --warmup-steps 30 --log-every 10 --eval-every 160 \
  --save-every 40 --seed 0
#    The cpu recipe's mixed_precision "auto" runs bf16 autocast where the CPU has it (about 1.8x float32's speed
#    there, docs/training.md); elsewhere it stays float32, since emulated bf16 is far slower.
# 6. The bundle: the adaptor and the LoRA (lora.gguf over the base GGUF), which runs for --transcribe turns only:
#    answers, spoken or typed, come from the plain LLM, whose typed answers stage 2 taught the spoken ones to match
#    (as many spoken answers agree without it, and typed ones stay SmolLM2's own).
#    One-shot answers hear with the LLM's help: it picks among the beam's 3 likeliest transcripts, the most that
#    keeps the first token under 150 ms; hands-free the LLM also joins the beam search. A 4-gram of the stage-1
#    transcripts' tokens joins the beam search where the LLM does not (weight 0.3, chosen on the dev sets;
#    docs/model-card.md).
export_bundle "$work/stage2/final" "$work/bundle" --lora-adapter --lora-turns transcribe --hearing-n-best 3 \
  --hearing-ngram 4 --hearing-ngram-fusion 0.3
# 7. Held-out evaluation (WER vs Whisper, spoken-vs-typed agreement, latency vs the cascade): unseen acoustics
#    with latency, alone; then matched and clean acoustics side by side, one core each (no latency measured).
$bin/llasm-assistant evaluate --bundle "$work/bundle" --asr "$work/asr/eval.jsonl" \
  --questions "$work/questions/eval.jsonl" --out "$work/eval" --n-asr 60 --n-questions 40 --threads 1
OMP_NUM_THREADS=1 $bin/llasm-assistant evaluate --bundle "$work/bundle" --asr "$work/asr-matched/eval.jsonl" \
  --questions "$work/questions-matched/eval.jsonl" --out "$work/eval-matched" --n-asr 60 --n-questions 40 \
  --threads 1 --no-latency &
matched=$!
OMP_NUM_THREADS=1 $bin/llasm-assistant evaluate --bundle "$work/bundle" --asr "$work/asr-clean/eval.jsonl" \
  --questions "$work/questions-clean/eval.jsonl" --out "$work/eval-clean" --n-asr 60 --n-questions 40 \
  --threads 1 --no-latency
wait "$matched"
trap - DEBUG
printf '%s\t%s\n' "$(date +%s)" "# run ends" >> "$work/steps.tsv"
echo "default model recipe done in $(( $(date +%s) - start )) s ($bin/python scripts/recipe_times.py $work); install it with:"
echo "  rm -rf assistant/default_model && cp -r $work/bundle assistant/default_model"
