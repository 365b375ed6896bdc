"""`ray job submit -- python jobs/generate.py CONFIG [KEY=VALUE ...]`: the generation job."""

import sys

from genixer_ray.cli import main

if __name__ == "__main__":  # vLLM starts its engine with spawn: the guard is required
    sys.exit(main(["generate", *sys.argv[1:]]))
