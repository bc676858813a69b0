# Maskbench: `make demo` and `make test` work on a fresh machine (they set everything up).
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# torch/torchvision pinned to the builds this project is tested with; override for your cluster.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Another package index for TORCH_SPEC (e.g. PyTorch's CPU-only one); empty: PyPI's CUDA build.
TORCH_INDEX ?=
DEBIAN_DATA := dataset-fashion-mnist wordnet-base bible-kjv
DEMO_OUT ?= results/demo
DEMO_TEXT_OUT ?= results/demo-text
DEMO_SENTENCES_OUT ?= results/demo-sentences
REFERENCE_OUT ?= results/reference-run

.PHONY: setup data demo demo-text demo-sentences reference test test-slow lint perf clean-results

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(PYTHON) -m pip install -q -e '.[dev]'
	touch $@

# The embedded datasets come from Debian packages; install them when root and missing.
data:
	@missing=""; \
	[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$$missing dataset-fashion-mnist"; \
	[ -e /usr/share/wordnet/data.noun ] || missing="$$missing wordnet-base"; \
	command -v bible >/dev/null || [ -e /usr/bin/bible ] || missing="$$missing bible-kjv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y --no-install-recommends $$missing || \
	     (apt-get update && apt-get install -y --no-install-recommends $$missing)) >/dev/null; \
	  else echo "missing data packages:$$missing (run: sudo apt-get install$$missing, or set MASKBENCH_DATA)"; fi; \
	fi

demo: setup
	$(PYTHON) -m bench run --methods qbheat,mae,interp,random-init,raw-input \
	  --dataset fashion-mnist --encoder vit-micro --epochs 3 --train-limit 6000 \
	  --eval-train-limit 5000 --eval-test-limit 5000 --seeds 0 --out $(DEMO_OUT)

# Masked language modelling on WordNet glosses at CPU size (small vocabulary and subsets).
demo-text: setup
	$(PYTHON) -m bench run --methods qbheat,mae,interp,random-init,raw-input \
	  --dataset wordnet-glosses --encoder vit-micro --epochs 2 --train-limit 1024 --batch-size 64 \
	  --eval-train-limit 4000 --eval-test-limit 1000 --seeds 0,1 --out $(DEMO_TEXT_OUT) \
	  vocab_size=2000

# The same comparison at the sentence level: windows of 8 consecutive verses of one KJV chapter,
# each verse 24 tokens; probes on verses, the next-sentence check on held-out chapters.
demo-sentences: setup
	$(PYTHON) -m bench run --methods qbheat,mae,interp,random-init,raw-input \
	  --dataset kjv-verses --encoder vit-micro --epochs 2 --train-limit 512 --batch-size 32 \
	  --eval-train-limit 2000 --eval-test-limit 1000 --seeds 0 --out $(DEMO_SENTENCES_OUT) \
	  granularity=sentence sentences=8 sentence_length=24 vocab_size=2000

# The benchmark's own answer at CPU scale (sweeps/reference.toml: 80 runs, 65 minutes measured on
# a 2-core CPU, partly beside other jobs): the sweep and its report, then the report and each run's light files
# published under results/reference/cpu-<date>/ with the machine, versions, sha and wall time.
# Rerunning resumes (finished runs are skipped); the wall time is then the last call's.
reference: setup
	start=$$(date +%s); \
	$(PYTHON) -m bench sweep sweeps/reference.toml --out $(REFERENCE_OUT) && \
	$(PYTHON) scripts/publish_reference.py $(REFERENCE_OUT) --wall-s $$(( $$(date +%s) - start ))

# The default suite stays lean (about 6 minutes on an idle 2-core CPU); the slow tests
# (compilers, torchrun, SLURM requeues, a fresh install) run apart. CI runs both.
test: setup
	$(PYTHON) -m pytest -q -m "not slow"

test-slow: setup
	$(PYTHON) -m pytest -q -m slow

lint: setup
	$(PYTHON) -m ruff check bench methods tests scripts

perf: setup
	$(PYTHON) -m bench perf --methods qbheat,mae,interp --encoder vit-micro --batch 256

clean-results:
	rm -rf results/*/
