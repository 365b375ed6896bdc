"""`ray job submit -- python jobs/train_generator.py CONFIG [KEY=VALUE ...]`: fine-tune a generator."""

import sys

from genixer_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
