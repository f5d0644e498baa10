"""The training jobs: every runnable job that trains models (a paper replication or a training run).

One rule: **a job whose product is trained models — a paper replication that trains and compares
models end to end, or a training run on a transformers/TRL Trainer — lives here, one module per
job, named as its** ``job`` **key** (a recipe with ``job: bts`` runs :mod:`trainers.jobs.bts`).
A domain's own steps stay in that domain (``hf_ext/<domain>/``: selection, including LESS's
warmup whose checkpoints feed the selection; curation; merging; evaluation). Every job here is a config
dataclass plus a run function registered in :data:`hf_ext.config.JOBS`, and writes its output
through :func:`hf_ext.jobs.job_output` (safe folder, ``metrics.json``, card, push, in that order).
What several jobs need beyond that (data files, small Llamas, a seed loader, Trainer settings) is
in :mod:`trainers.jobs.common`, once.

==================  ==========================================================================
module              job
==================  ==========================================================================
``bts``             Branch-Train-Stitch replication (arXiv 2502.00075)
``critic_rm``       Critic-RM two-stage reward model (arXiv 2411.16646)
``time_vectors``    time vectors on news by year (arXiv 2312.13401)
``xelm``            X-ELM experts vs a compute-matched dense model (arXiv 2401.10440)
``scaling_tiny``    over-training scaling law on tiny Llamas (arXiv 2403.08540)
``sft``             TRL SFT on a selection, optionally evaluated
``compare``         select -> sft -> evaluate per selection method, one verdict
==================  ==========================================================================

Imports go downward: this package imports :mod:`trainers` and :mod:`hf_ext`; nothing in
:mod:`hf_ext` or in the Trainer modules of :mod:`trainers` imports it (``hf_ext.config.JOBS``
names it by string, imported lazily by the CLI).
"""
