# Two commands on a fresh machine:  `make demo` (set up, run the main job)  and  `make test`.
VENV := .venv
comma := ,
STAMP := $(VENV)/.setup-done

.PHONY: setup lint test test-fast demo docs bench bench-scale clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/cpu.lock tools/setup.sh tools/torchvision_cpu_shim.py
	bash tools/setup.sh

lint: setup
	$(VENV)/bin/ruff check genixer_ray tests bench jobs docs

test: setup
	bash tools/setup_browser.sh
	$(VENV)/bin/python -m pytest -q

# No Ray, no vLLM, no cluster: the unit tier and the CLI's quick checks (about a minute).
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not ray and not vllm and not cluster"

# The Genixer loop on one small machine: fine-tune the tiny generator (Ray Train), then generate
# with it over the bundled photos (Ray Data + vLLM), filter, export the kept rows, write the report,
# and publish the kept rows as a dataset (datasets Parquet + card, WebDataset). Outputs under runs/.
demo: setup
	@$(VENV)/bin/genixer-ray train configs/train.yaml
	@$(VENV)/bin/genixer-ray generate configs/demo.yaml
	@$(VENV)/bin/genixer-ray export runs/demo runs/demo-kept-llava.json
	@$(VENV)/bin/genixer-ray report runs/demo
	@$(VENV)/bin/genixer-ray publish runs/demo runs/demo-dataset --show 2

# The documentation site, strict (docs/README.md): into site/, open site/index.html.
docs: setup
	NO_MKDOCS_2_WARNING=1 GENIXER_DOCS_PICTURE=1 $(VENV)/bin/mkdocs build --strict

# Benchmarks (about 24 minutes on 2 cores): each prints a table and ratios against a baseline
# measured in the same run into bench/results/*_cpu.txt (see BENCHMARKS.md); framework and engine
# output goes to $GENIXER_RAY_HOME/logs/bench-*.log. bench-scale adds the 1,000,000-row run
# (about 25 minutes here).
BENCH = set -o pipefail; { echo "\# $(1)  ($$(date -u +%F), $$(nproc) cores, $$(uname -m))"; $(VENV)/bin/python $(1); } | tee bench/results/$(2)
bench: setup
	@bash -c '$(call BENCH,bench/bench_pipeline.py,pipeline_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_generate.py --rows 64 --vllm,generate_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_filters.py --rows 64 --batches 8$(comma)32,filters_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_samples.py,samples_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_resume.py,resume_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_scale.py --sizes 10000$(comma)100000,scale_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_store.py,store_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_fingerprints.py,fingerprints_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_publish.py,publish_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_rating.py,rating_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_image_dedup.py,image_dedup_cpu.txt)'
	@bash -c '$(call BENCH,bench/bench_question_dedup.py,question_dedup_cpu.txt)'

bench-scale: setup
	@bash -c '$(call BENCH,bench/bench_scale.py --sizes 10000$(comma)100000$(comma)1000000,scale_1m_cpu.txt)'

clean:
	rm -rf $(VENV) runs site .pytest_cache
