"""Decontamination: evaluation sets read as their users have them (:mod:`.evalsets`), their images'
fingerprints indexed once per run (:mod:`.index`), and every image of a run matched against them
before it reaches the generator (:class:`genixer_ray.stages.contamination.ContaminationStage`)."""
