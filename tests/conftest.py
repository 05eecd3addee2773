from hypothesis import settings

pytest_plugins = [
    "tests.harness.kafka_fixtures",
    "tests.harness.kube_fixtures",
    "tests.harness.claims",
    "tests.harness.operator_fixtures",
    "tests.harness.postgres_fixtures",
    "tests.harness.s3_fixtures",
]

# Hypothesis's per-example deadline is a timed assertion: on a loaded 2-core machine it fails tests
# whose code is fine. Properties are checked without it.
settings.register_profile("directstream", deadline=None)
settings.load_profile("directstream")
