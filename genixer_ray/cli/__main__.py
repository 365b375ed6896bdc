"""``python -m genixer_ray.cli``: the ``genixer-ray`` command."""

import sys

from genixer_ray.cli import main

sys.exit(main())
