"""genixer-ray: multimodal LLMs as generators of visual instruction data, on Ray.

The data flow of a generation run, and the file of each step::

    config (config/, models.py)        a YAML run, validated before any work
      |
    inputs.py -> store.py              the input listed once into a plan of fixed shards
      |
    pipeline.py                        Ray Data over the uncommitted shards, a read task each
      |                                (shard_source.py)
      +- actors.load_shards            decode tasks: read, check, decode (stages.DecodeStage)
      +- actors.GeneratorActor         one engine per actor (engines/): prompt (prompts.py),
      |                                generate, parse (tasks.py), and the filters placed on the
      |                                generator's engine (FiltersConfig.placement)
      +- actors.FilterActor            CLIP and filters with their own models (filters/)
      |
    writer.ShardWriter                 per shard: decide (filters/decide.decide_shard),
                                       check the schema (schema.py), commit (store.commit_shard)

A filter pass (filter_pass.py) feeds a run's committed shards through the filter actors into
``{run}/filtered/{name}``; training (train.py) converts published annotations (annotations/)
into instruction samples (instruct.py) and fine-tunes on Ray Train; export.py,
export_shikra.py, report.py, inspection.py and verify.py read finished runs.
"""
