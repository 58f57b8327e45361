# mk/peer.mk -- make bench-peer (issue 15, item 3): libstsl against the same algorithms written
# directly in PyTorch eager (scripts/peer/peer_eager.py: DPS and STSL, the torch operators, the
# shipped networks as eager nn.Modules), run interleaved at equal steps on the same images and
# measurements; per-restoration solver time of both sides, library/eager ratios (median and min of
# the paired runs), PSNRs, network passes.  Results: docs/peer-bench.md (block between the
# peer-results markers; the rest of the page documents the harness).  Needs /usr/bin/python3 with
# Debian's python3-torch (installed by scripts/deps.sh) and dataset-fashion-mnist.
#
# Knobs (make variables or environment):
#   PEER_PAIRS    paired runs per configuration (default 3)
#   PEER_STEPS    steps per solver, "dps=100 stsl=20" (default) or one number for both
#   PEER_SOLVERS  "dps stsl"      PEER_TASKS  "sr4 gaussian-blur" (also sr2 sr8 random-inpaint box-inpaint)
#   PEER_THREADS  "1 2"           PEER_BATCHES "1 8"
#   PEER_N1       images restored one at a time in a batch-1 run (default 2); a batch-B run restores B
#   PEER_SEED     operator/noise/sampler seed (default 0)
#   PEER_VERIFY_STEPS  steps of the untimed same-mathematics check ("dps=20 stsl=5"; see the doc)
#   PEER_MALLOC   tuned (default): both sides under the tools' allocator policy (cli_tune_malloc;
#                 the eager process through GLIBC_TUNABLES); system: both under glibc's defaults
#   PEER_DIR      work directory (default $(BUILD)/peer)   PEER_REPORT  (default docs/peer-bench.md)
# Not part of `make bench` (it compares the library with another implementation).  Cost: 16
# configurations x PEER_PAIRS x 2 timed runs, projected at about 12 min for the defaults on an idle
# 2-core machine (docs/peer-bench.md; its results block records the real duration).  Run it on a
# quiet machine and without -j.
# Smoke test (a few minutes):
#   make bench-peer PEER_PAIRS=1 PEER_STEPS=5 PEER_TASKS=sr4 PEER_REPORT=build/peer/smoke.md

PEER_PYTHON ?= /usr/bin/python3
PEER_PAIRS ?= 3
PEER_STEPS ?= dps=100 stsl=20
PEER_SOLVERS ?= dps stsl
PEER_TASKS ?= sr4 gaussian-blur
PEER_THREADS ?= 1 2
PEER_BATCHES ?= 1 8
PEER_N1 ?= 2
PEER_SEED ?= 0
PEER_VERIFY_STEPS ?= dps=20 stsl=5
PEER_MALLOC ?= tuned
PEER_DIR ?= $(BUILD)/peer
PEER_REPORT ?= docs/peer-bench.md

.PHONY: bench-peer

bench-peer: deps tools
	@PEER_PAIRS="$(PEER_PAIRS)" PEER_STEPS="$(PEER_STEPS)" PEER_SOLVERS="$(PEER_SOLVERS)" \
	    PEER_TASKS="$(PEER_TASKS)" PEER_THREADS="$(PEER_THREADS)" PEER_BATCHES="$(PEER_BATCHES)" \
	    PEER_N1="$(PEER_N1)" PEER_SEED="$(PEER_SEED)" PEER_VERIFY_STEPS="$(PEER_VERIFY_STEPS)" \
	    PEER_MALLOC="$(PEER_MALLOC)" PEER_DIR="$(PEER_DIR)" \
	    PEER_REPORT="$(PEER_REPORT)" BINOUT="$(BINOUT)" LIBOUT="$(LIBOUT)" \
	    $(PEER_PYTHON) scripts/peer/peer_bench.py
