"""Hypothesis without its timing checks: how fast examples run or are drawn depends on the machine (a cold
first run, a busy CI core), and speed is measured by the benchmarks, not asserted by tests."""
from hypothesis import HealthCheck, settings

# `pytester` runs the log secret check on a planted leak; the check itself greps every log of the suite.
pytest_plugins = ["pytester", "tests.log_secret_check"]

settings.register_profile("untimed", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("untimed")
