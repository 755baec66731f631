"""Shared test settings: property tests never fail on timing (the CI machine is shared and noisy)."""

from hypothesis import HealthCheck, settings

settings.register_profile("llmops", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("llmops")
