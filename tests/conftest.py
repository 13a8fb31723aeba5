"""Hypothesis without its timing checks: how fast examples run or are drawn depends on the machine (a cold
first run, a busy CI core), and speed is measured by the benchmarks, not asserted by tests."""
from hypothesis import HealthCheck, settings

settings.register_profile("untimed", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("untimed")
