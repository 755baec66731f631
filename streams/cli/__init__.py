"""The ``llmops`` command line: one module per command group, and the demo behind ``make run``.

What lives here:
    ``main`` (the root group, ``main()`` and the error handling every command shares), ``kafka``,
    ``worker``, ``data`` (publish, profile), ``inference`` (search, query, models), ``trace``,
    ``monitor``, ``replay``, ``demo`` (with ``demo_inference`` and ``demo_monitor``), ``support``.

May import:
    every package of ``streams``; nothing imports it back. ``make lint`` checks it.
"""
