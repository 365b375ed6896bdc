"""`ray job submit -- python jobs/filter.py RUN CONFIG [KEY=VALUE ...]`: a filter pass over a run."""

import sys

from genixer_ray.cli import main

if __name__ == "__main__":  # vLLM starts its engine with spawn: the guard is required
    sys.exit(main(["filter", *sys.argv[1:]]))
