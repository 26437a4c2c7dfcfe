"""Influence of training examples on test examples, with several methods behind one engine.

Module map:

* ``engine.py``: the loop (checkpoints x test chunks x training shards), memory planning, timing,
  progress, rank sharding, the sink; raises ``errors.py`` exceptions;
* ``plan.py``: ``Plan``, ``Part``, the ``Sink`` protocol, ``MemorySink``;
* ``methods/``: one estimator per file behind the protocol of ``methods/base.py`` (``tracin``,
  ``adam-cosine``, ``representation``, ``trak``) and the registry (``methods/__init__.py``);
  ``methods/gradient.py`` is what the gradient methods share, ``terms.py`` their resident pieces
  (dense, word embeddings by token pairs or over the test vocabulary, CountSketch);
* ``grads.py``: per-example gradients of an objective's loss (``lingtrace.objectives``) with
  torch.func; ``params.py``: the parameter selection and groups; ``sparse.py``: word-embedding rows;
  ``projection.py``: the CountSketch; ``context.py``: what an estimator sees at a checkpoint;
* the options are ``lingtrace.config.influence``: ``InfluenceOptions`` (the config section) and
  ``Tuning`` (API-only knobs);
* ``store/``: the score store (``meta.py`` its typed meta.json, ``writer.py``, ``reader.py``);
* ``stage.py``: the ``influence`` stage over every configured method; ``advice.py``: the fixes of
  engine errors; ``tracin.py``: the ``TracIn`` Python API.
"""
