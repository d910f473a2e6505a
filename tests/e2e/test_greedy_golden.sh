#!/usr/bin/env bash
# Greedy generation against llama.cpp's (tests/data/golden/smollm2-greedy.tsv and its
# per-step top-1 minus top-2 logit margins, both from tests/tools/make_goldens.py).
#
# 1. --numerics llamacpp (llama.cpp's arithmetic, worker/llamacpp.h), one stage and a
#    three-stage pipeline: the 32 greedy tokens must equal llama.cpp's on at least 90% of at
#    least 10 prompts, and where they do, the top-1/top-2 margin of every step must equal
#    llama.cpp's to the golden's 4 decimals (the logits themselves agree, not only the argmax).
# 2. The default numerics (baton's faster kernels): both engines round every matmul input to
#    8 bits, so a different float summation order flips some roundings and moves logits by
#    ~0.1-0.3. Checked: the tokens equal llama.cpp's up to the end or up to a step where
#    llama.cpp's own top two logits are within NEAR_TIE (0.25) of each other. A divergence at
#    a larger margin would be a real difference in the model math.
# The comparison (check, compare) is tests/e2e/golden_lib.sh (margins_of: lib.sh), shared with
# test_quant_variants.sh.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/golden_lib.sh"
need_model
check "llamacpp numerics" exact --numerics llamacpp
check "llamacpp numerics, 3 stages" exact --numerics llamacpp --stages 3
check "fast numerics" near-tie
finish
