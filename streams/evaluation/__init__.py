"""Evaluation of retrieval and answers on labelled question sets."""
