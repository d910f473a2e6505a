#!/usr/bin/env bash
# Decode steps of many streams run as lanes (worker/forward.c): each of the two threads takes
# half of the rows through whole layers, one pool section per layer instead of ten. On the two
# real models, SmolLM2 (Q4_1, Q8_0 output) and Gemma 3 270M (Q5_0, Q8_0, Q4_K and Q6_K; post
# norms, the sliding window, GeGLU), 36 greedy completions decoding together give exactly the
# tokens and logprobs they give one at a time (lib.sh's lanes_check). test_families.sh checks
# the same on the synthetic Qwen 2 (biases), Qwen 3, Phi-3 and Llama 3 files, and
# unit.test_forward bit for bit on logits, with forks among the rows, at every kernel level.
source "$(dirname "$0")/lib.sh"
need_model
need_model_gemma3
lanes_check "$MODEL" "SmolLM2 Q4_1"
lanes_check "$GEMMA" "Gemma 3 270M"
finish
