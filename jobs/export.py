"""`ray job submit -- python jobs/export.py RUN OUT [--format llava|shikra] ...`: a run's kept rows as training data."""

import sys

from genixer_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
