"""docs/configuration.md is generated from the CRD and must be current."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_crd() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen_config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_top_level_spec_field_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for field in (
        "kafka",
        "topics",
        "topicPattern",
        "startingOffsets",
        "batchInterval",
        "rate",
        "executors",
        "processor",
        "onDataLoss",
        "maxAttempts",
        "suspend",
        "stopAt",
        "reset",
        "offsets",
    ):
        assert f"| `spec.{field}` |" in text, field
