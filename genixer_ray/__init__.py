"""genixer-ray: multimodal LLMs as generators of visual instruction data, on Ray.

The data flow of a generation run, and the file of each step::

    config (config/, models.py)        a YAML run, validated before any work, laid out by
      |                                component: engines (each model), pools (decode tasks,
      |                                each actor pool), ray, filters (what each asks and keeps)
    inputs.py -> store.py              the input listed once into a plan of fixed shards
      |
    pipeline.py                        the run's source (the plan's uncommitted shards) and its
      |                                list of stage specs (stages/), wired into Ray Data by
      |                                builder.build_dataset:
      +- read tasks                    stages/decode.py: read, check, decode (a task per shard,
      |                                shard_source.py)
      +- builder.GeneratorActor        one engine per actor (engines/): stages/prompt.py
      |                                (prompts.py), stages/generate.py, stages/parse.py
      |                                (tasks.py), and the filters
      |                                placed on the generator's engine (stages/filters.py)
      +- builder.FilterActor           CLIP and filters with their own models (filters/)
      |
    writer.ShardWriter                 per shard: decide (filters/decide.decide_shard),
                                       check the schema (schema.py), commit (store.commit_shard)

Errors form one family (errors.py): user errors (exit 2), failed runs (exit 1), and row errors
that become error rows with a code.

A filter pass (filter_pass.py) feeds a run's committed shards through the filter actors into
``{run}/filtered/{name}``; training (train.py) converts published annotations (annotations/)
into instruction samples (instruct.py) and fine-tunes on Ray Train; export.py,
export_shikra.py, report.py, inspection.py and verify.py read finished runs.
"""


def scan_run(url: str, *, storage_options: dict | None = None):
    """A run's (or a filter pass's) committed rows as a ``pyarrow.dataset.Dataset``, lazily.

    Only shards whose commit marker exists are read: not a shard still being written, nor a copy
    of one under another name, which a glob over ``data/*.parquet`` would read too. Polars:
    ``pl.scan_pyarrow_dataset(scan_run(url))``; DuckDB: ``duckdb.sql("select * from ds")`` with
    ``ds = scan_run(url)``; pyarrow: ``scan_run(url).to_table()``.

    Args:
        url: the run's folder (``{output.path}/{name}``) or a filter pass's, local or any fsspec URL.
        storage_options: fsspec options for it (credentials, endpoint).
    """
    from genixer_ray.store import RunStore

    return RunStore(url, storage_options).dataset()
