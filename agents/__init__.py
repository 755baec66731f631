"""Faust agents: each module wires topics to functions from :mod:`streams` and nothing more."""
