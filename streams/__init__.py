"""llmops-streams: the library behind the agents (settings, topics, codec, pure transforms, CLI)."""

__version__ = "0.1.0"
