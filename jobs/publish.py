"""`ray job submit -- python jobs/publish.py RUN OUT [KEY=VALUE ...]`: a run's kept rows as a dataset (datasets + card, WebDataset)."""

import sys

from genixer_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
