# Two commands on a fresh machine:  `make demo` (set up, run the main job)  and  `make test`.
VENV := .venv
STAMP := $(VENV)/.setup-done

.PHONY: setup lint test test-fast demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/cpu.lock tools/setup.sh tools/torchvision_cpu_shim.py
	bash tools/setup.sh

lint: setup
	$(VENV)/bin/ruff check genixer_ray tests bench jobs

test: setup
	bash tools/setup_browser.sh
	$(VENV)/bin/python -m pytest -q

# No Ray, no vLLM, no cluster: the unit tier and the CLI's quick checks (about a minute).
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not ray and not vllm and not cluster"

# The Genixer loop on one small machine: fine-tune the tiny generator (Ray Train), then generate
# with it over the bundled photos (Ray Data + vLLM), filter, export the kept rows, write the report.
# Outputs under runs/.
demo: setup
	@$(VENV)/bin/genixer-ray train configs/train.yaml
	@$(VENV)/bin/genixer-ray generate configs/demo.yaml
	@$(VENV)/bin/genixer-ray export runs/demo runs/demo-kept-llava.json
	@$(VENV)/bin/genixer-ray report runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
