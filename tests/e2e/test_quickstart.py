"""The quickstart's "your own images" step, executed as written: its YAML block saved as the file its
commands name, then each command of its bash block run, with the paths moved to this test's folder."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from genixer_ray.images import embedded_image_paths

ROOT = Path(__file__).resolve().parents[2]


def own_images_section() -> tuple[str, list[str]]:
    """The quickstart's section 2: its YAML block and the commands of its bash block."""
    page = (ROOT / "docs" / "quickstart.md").read_text()
    section = page[page.index("## 2. Your own images") : page.index("## 3.")]
    config = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return config, [line.split("#", 1)[0].strip() for line in bash.splitlines() if line.strip()]


def test_the_quickstarts_own_images_commands_run_as_written(tmp_path):
    config, commands = own_images_section()
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, path in embedded_image_paths().items():
        shutil.copy(path, photos / f"{name}{path.suffix}")
    # The page's example paths, moved here; the rest of the config and the commands as written.
    cfg = yaml.safe_load(config)
    assert cfg["input"]["source"] == "/data/photos"
    cfg["input"]["source"] = str(photos)
    cfg.setdefault("output", {})["path"] = str(tmp_path / "runs")
    name = next(w for c in commands for w in shlex.split(c) if w.endswith(".yaml"))
    (tmp_path / name).write_text(yaml.safe_dump(cfg))
    ran = []
    for command in commands:
        words = [w.replace("runs/", f"{tmp_path / 'runs'}/").replace("/data/", f"{tmp_path}/") for w in shlex.split(command)]
        assert words[0] == ".venv/bin/genixer-ray", command
        # The tiny generator on the transformers backend (the page's default is vLLM, whose engine
        # start the vLLM tests pay for); every other setting is the page's.
        extra = ["engines.generator.backend=transformers"] if words[1] == "generate" else []
        out = subprocess.run([sys.executable, "-m", "genixer_ray.cli", *words[1:], *extra], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stderr[-3000:]}"
        ran.append(words[1])
    assert ran == ["generate", "report", "publish"]
    run = tmp_path / "runs" / cfg["name"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert sum(c["rows"] for c in manifest["funnel"].values()) == 2 * len(embedded_image_paths())  # samples_per_image: 2
    assert "Funnel per task" in (run / "report.html").read_text()
    card = (tmp_path / "shop-dataset" / "README.md").read_text()
    assert "cc-by-4.0" in card and "strict" in card  # the page's license, and the view it published
