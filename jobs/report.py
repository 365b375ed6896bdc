"""`ray job submit -- python jobs/report.py RUN [--out FILE]`: one self-contained HTML page about a run."""

import sys

from genixer_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
