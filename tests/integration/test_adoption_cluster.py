"""Adoption after ``executors.max`` changed (issue #11, Done-when): the operator is killed while a
batch runs, the spec's ``executors.max`` is lowered, the operator comes back. The recorded attempt
is pinned, so the running Job (and its work-units ConfigMap) is adopted as it is: the batch runs
once, as attempt 1, with its recorded units; the new max applies from the next batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.claims import HostVolumes
from tests.harness.kafka_fixtures import KafkaBroker
from tests.harness.kube_fixtures import Kube
from tests.harness.local_mode import group_offsets, latest_offsets
from tests.harness.operator_fixtures import (
    OperatorProcess,
    get_stream,
    stream_manifest,
    wait_committed,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]

SLOW_SINK = (
    "import time\n"
    "class Slow:\n"
    "    def __init__(self, options, unit):\n"
    "        self.out, self.unit = options['out'], unit\n"
    "    def process(self, records, rng):\n"
    "        time.sleep(4)\n"
    "        with open(self.out, 'a') as f:\n"
    "            f.writelines(f'{self.unit.batch_id} {self.unit.attempt} {self.unit.index} '\n"
    "                         f'{r.partition()} {r.offset()}\\n' for r in records)\n"
)


def test_a_running_job_is_adopted_after_executors_max_changed(
    kube: Kube,
    kafka: KafkaBroker,
    namespace: str,
    operator: OperatorProcess,
    host_volumes: HostVolumes,
    topic_name: str,
    tmp_path: Path,
):
    kafka.create_topic(topic_name, partitions=4)
    kafka.produce(topic_name, 400, partitions=4)
    (tmp_path / "slowsink.py").write_text(SLOW_SINK)
    out = tmp_path / "rows"
    spec = {
        "topics": [topic_name],
        "batchInterval": "1s",
        # The executor pods get the sink module and write their rows through a claim on tmp_path.
        "executors": {"max": 4, **host_volumes.code(namespace, tmp_path)},
        "processor": {"sink": "python", "options": {"entryPoint": "slowsink:Slow", "out": str(out)}},
    }
    kube.kubectl("apply", "-f", "-", input=stream_manifest("adopt", namespace, kafka.bootstrap, spec))

    def running() -> dict[str, object] | None:
        pending = (get_stream(kube, namespace, "adopt").get("status") or {}).get("pending") or {}
        return pending if pending.get("job") else None

    pending = wait_until("a running batch", running, 90)
    job = str(pending["job"])
    units = kube.kubectl("get", "configmap", f"{job}-units", "-n", namespace, "-o", "json").stdout
    assert len(json.loads(json.loads(units)["data"]["units.json"])) == 4, "the units live in the ConfigMap"
    operator.kill()
    patch = json.dumps({"spec": {"executors": {"max": 1}}})
    kube.kubectl("patch", "directstream", "adopt", "-n", namespace, "--type=merge", "-p", patch)
    operator.start()
    kafka.produce(topic_name, 40, partitions=4)
    latest = latest_offsets(kafka.bootstrap, topic_name)
    stream = wait_committed(kube, namespace, "adopt", latest, timeout=150)

    assert f"adopted running Job {job}" in operator.log()
    rows = [line.split() for line in out.read_text().splitlines()]
    offsets = [(int(p), int(o)) for _, _, _, p, o in rows]
    assert sorted(offsets) == sorted(set(offsets)), "no record reached the sink twice"
    assert set(offsets) == {(p, o) for (_, p), end in latest.items() for o in range(end)}
    adopted = [r for r in rows if int(r[0]) == pending["batch"]]
    assert {r[1] for r in adopted} == {"1"}, "the adopted batch ran once, as attempt 1"
    assert {r[2] for r in adopted} == {"0", "1", "2", "3"}, "with its recorded four units"
    later = [r for r in rows if int(r[0]) > int(str(pending["batch"]))]
    assert later and {r[2] for r in later} == {"0"}, "the new executors.max applies from the next batch"
    assert group_offsets(kafka.bootstrap, "adopt", topic_name) == latest
    history = {h["batch"]: h for h in stream["status"]["history"]}
    assert history[pending["batch"]]["attempts"] == 1
