"""The kubectl plugin's pure parts: ``--to`` parsing, status tables, flags as kubectl's."""

from __future__ import annotations

import pytest

from directstream.operator.kubectl_plugin import (
    EXIT_USAGE,
    PluginError,
    build_parser,
    render_status,
    reset_target,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["earliest"], {"to": "earliest"}),
        (["latest"], {"to": "latest"}),
        (["2026-11-01T00:00:00Z"], {"to": "timestamp", "timestamp": "2026-11-01T00:00:00Z"}),
        (["a.b-c:0=5", "a.b-c:12=0"], {"to": "offsets", "offsets": {"a.b-c": {"0": 5, "12": 0}}}),
        (["t:007=3"], {"to": "offsets", "offsets": {"t": {"7": 3}}}),
    ],
)
def test_reset_targets(values: list[str], expected: dict[str, object]):
    assert reset_target(values) == expected


@pytest.mark.parametrize(
    "values", [["yesterday"], ["t:0"], ["t=5"], ["t:x=5"], ["t:0=-1"], ["earliest", "t:0=1"]]
)
def test_bad_reset_targets_are_usage_errors(values: list[str]):
    with pytest.raises(PluginError) as caught:
        reset_target(values)
    assert caught.value.code == EXIT_USAGE
    assert "TOPIC:PARTITION=OFFSET" in str(caught.value)


def test_connection_flags_go_before_or_after_the_command():
    after = build_parser().parse_args(["status", "x", "-n", "ns", "--context", "c"])
    before = build_parser().parse_args(["-n", "ns", "--kubeconfig", "k", "status", "x"])
    assert (after.namespace, after.context, after.kubeconfig) == ("ns", "c", None)
    assert (before.namespace, before.context, before.kubeconfig) == ("ns", None, "k")


def test_status_shows_the_pending_ranges_offsets_lag_batches_and_conditions():
    obj = {
        "metadata": {"name": "clicks", "namespace": "team"},
        "spec": {"groupId": "g", "reset": {"id": "r2", "to": "earliest"}},
        "status": {
            "phase": "Running",
            "batch": 3,
            "committed": {"t": {"0": 10, "1": 20}},
            "nextBatchId": 5,
            "pending": {
                "batch": 4,
                "attempt": 2,
                "plannedAt": 1.0,
                "until": {"t": {"0": 15}},
                "job": "clicks-b4",
            },
            "history": [
                {
                    "batch": 3,
                    "attempts": 1,
                    "partitions": 2,
                    "records": 30,
                    "bytes": 300,
                    "seconds": 1.5,
                    "committedAt": 1.0,
                }
            ],
            "recordsTotal": 30,
            "appliedReset": "r1",
            "lag": {"total": 7, "partitions": [{"topic": "t", "partition": 1, "lag": 7}]},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "BatchCommitted",
                    "message": "batch 3 committed",
                    "lastTransitionTime": "2020-01-01T00:00:00Z",
                }
            ],
        },
    }
    text = render_status(obj)
    assert "Group:      g" in text and "3 committed, 4 pending" in text and "Lag:        7 records" in text
    assert "Reset:      applied r1, requested r2" in text
    assert "Pending batch 4 (attempt 2, job clicks-b4): 1 range(s), 5 offsets" in text
    lines = text.splitlines()
    assert lines[lines.index("Committed offsets:") + 2].split() == ["t", "0", "10", "0"]
    assert lines[lines.index("Committed offsets:") + 3].split() == ["t", "1", "20", "7"]
    assert "BatchCommitted" in text and "RECORDS" in text
