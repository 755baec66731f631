"""Evaluation of retrieval and answers on labelled question sets.

The sets live in ``streams/evaluation/data/`` (a dev split to tune on and a test split that is only
reported), written by hand against the standard-library docstring corpus of
:func:`streams.ingest.corpus.stdlib_documents`; :mod:`streams.evaluation.check_questions` validates them.
"""
