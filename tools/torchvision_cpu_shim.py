"""Let the pure-Python parts of a CUDA-built torchvision import beside a CPU-only torch.

The registry's torchvision wheels are CUDA builds; with the CPU torch their compiled ops cannot
load and ``import torchvision`` dies on ``operator torchvision::nms does not exist``. Declaring
the two operator schemas it registers fakes at import time lets transforms (which open_clip
needs) import and work; the compiled ops themselves stay unavailable.

``make setup`` copies this file into the virtual environment's site-packages together with a
``.pth`` line that imports it, only when torchvision fails to import there. It must hold in every
process (vLLM and Ray start their own), and it must stay cheap: it imports nothing heavy until
something imports torchvision.
"""

import importlib.abc
import sys


class _DefineTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # once per process
        import torch

        for name, schema in (
            ("nms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
            ("qnms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
        ):
            try:
                torch.library.define(f"torchvision::{name}", schema)
            except RuntimeError:
                pass  # already defined (a working build, or a second interpreter hook)
        return None  # let the regular finders import torchvision


sys.meta_path.insert(0, _DefineTorchvisionOps())
