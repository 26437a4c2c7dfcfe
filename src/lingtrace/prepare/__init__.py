"""Preparing a task's data: reading it from its source (``readers``) and drawing the run's train, dev
and test samples (``sampling``)."""
