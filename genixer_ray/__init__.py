"""genixer-ray: multimodal LLMs as generators of visual instruction data, on Ray.

The data flow of a generation run, and the file of each step::

    config (config/, models.py)        a YAML run, validated before any work
      |
    inputs.py -> store.py              the input listed once into a plan of fixed shards
      |
    pipeline.py                        the run's source (the plan's uncommitted shards) and its
      |                                list of stage specs (stages/), wired into Ray Data by
      |                                builder.build_dataset:
      +- read tasks                    stages/decode.py: read, check, decode (a task per shard,
      |                                shard_source.py)
      +- builder.GeneratorActor        one engine per actor (engines/): stages/generate.py
      |                                (prompts.py), stages/parse.py (tasks.py), and the filters
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
