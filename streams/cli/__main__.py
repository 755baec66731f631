"""``python -m streams.cli``: the same as the ``llmops`` command."""

from streams.cli.main import main

main()
