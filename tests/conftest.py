from pathlib import Path

pytest_plugins = ["tests.harness.kafka_fixtures"]
if (Path(__file__).parent / "harness" / "kube_fixtures.py").exists():
    pytest_plugins.append("tests.harness.kube_fixtures")
