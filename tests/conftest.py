pytest_plugins = [
    "tests.harness.kafka_fixtures",
    "tests.harness.kube_fixtures",
    "tests.harness.operator_fixtures",
    "tests.harness.postgres_fixtures",
    "tests.harness.s3_fixtures",
]
