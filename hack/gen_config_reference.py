"""Write docs/configuration.md from the CRD's schema (the one source of spec field docs).

    .venv/bin/python hack/gen_config_reference.py [--check]

``--check`` exits 1 when the file is out of date (tests/unit/test_config_reference.py runs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "executor")]

from directstream.executor.contract.kafka import (  # noqa: E402
    ALLOW_OIDC_FLAG,
    DRIVER_CONFIG,
    OIDC_CONFIG,
    REFUSED_CONFIG,
    SECRET_CONFIG,
    UNSAFE_CONFIG,
)
from directstream.executor.contract.librdkafka_properties import LIBRDKAFKA_VERSION  # noqa: E402
from directstream.operator.core.spec_kafka import local_secret_variable  # noqa: E402

CRD = ROOT / "crds" / "directstream.yaml"
DOC = ROOT / "docs" / "configuration.md"

HEADER = """# Configuration reference

Every field of a `DirectStream`'s `spec`, generated from `crds/directstream.yaml` by
`hack/gen_config_reference.py` (a unit test fails when this file is out of date). `kubectl explain
directstream.spec.<field>` shows the same text on a cluster.

| field | type | default | description |
| --- | --- | --- | --- |
"""


# Fields holding a Kubernetes type: named by it rather than expanded (kubectl explain has every field).
KUBERNETES_TYPES = {
    "spec.executors.env": "list of core/v1 EnvVar",
    "spec.executors.tolerations": "list of core/v1 Toleration",
    "spec.executors.securityContext": "core/v1 PodSecurityContext",
    "spec.executors.containerSecurityContext": "core/v1 SecurityContext",
    "spec.executors.volumes": "list of core/v1 Volume",
    "spec.executors.volumeMounts": "list of core/v1 VolumeMount",
    "spec.executors.affinity": "core/v1 Affinity",
}


def kind(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    if "enum" in node:
        return " \\| ".join(str(v) for v in node["enum"])
    if node.get("type") == "array":
        return f"list of {kind(node.get('items', {}))}"
    if node.get("type") == "object" and "additionalProperties" in node:
        return "map"
    return str(node.get("type") or ("string or object" if "anyOf" in node else "any"))


def rows(node: dict[str, Any], path: str) -> list[str]:
    out = []
    for key, child in node.get("properties", {}).items():
        here = f"{path}.{key}"
        default = (
            "" if "default" not in child or child["default"] == {} else f"`{json.dumps(child['default'])}`"
        )
        text = " ".join(str(child.get("description", "")).split()).replace("|", "\\|")
        out.append(f"| `{here}` | {KUBERNETES_TYPES.get(here) or kind(child)} | {default} | {text} |")
        if child.get("type") == "object" and "properties" in child and here not in KUBERNETES_TYPES:
            out.extend(rows(child, here))
    return out


def render() -> str:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return HEADER + "\n".join(rows(spec, "spec")) + "\n" + kafka_settings()


def kafka_settings() -> str:
    """What ``spec.kafka.config`` may hold, from the contract's own lists."""

    def keys(names: object) -> str:
        return ", ".join(f"`{k}`" for k in sorted(names))  # type: ignore[call-overload]

    lines = [
        "",
        "## Kafka client settings (`spec.kafka.config`, `spec.kafka.configFrom`)",
        "",
        f"Every key must be a setting librdkafka {LIBRDKAFKA_VERSION} knows; anything else is refused",
        "(`InvalidSpec`, with the closest known name). The CRD refuses the keys below as the parser does,",
        "with the same message.",
        "",
        "| key | refused because |",
        "| --- | --- |",
    ]
    lines += [f"| `{k}` | managed by directstream: {why} |" for k, why in REFUSED_CONFIG.items()]
    lines += [f"| `{k}` | {why} |" for k, why in UNSAFE_CONFIG.items()]
    lines += [
        f"| `{k}` | a secret: only as a key of the Secret of `spec.kafka.configFrom` (cluster) or in "
        f"`{local_secret_variable(k)}` (`directstream run`) |"
        for k in sorted(SECRET_CONFIG)
    ]
    lines += [
        "",
        "OIDC makes a Kafka client fetch tokens from a URL: "
        + ", ".join(f"`{k}: {v}`" for k, v in sorted(OIDC_CONFIG.items()))
        + f" are refused unless the operator (or `directstream run`) runs with `{ALLOW_OIDC_FLAG}`",
        "(chart value `kafka.allowOidc`).",
        "",
        "The operator's own clients (planning, group commits) take only these settings of the spec and",
        "the Secret; executors take all of them:",
        "",
        keys(DRIVER_CONFIG),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(
                f"{DOC.relative_to(ROOT)} is out of date: run .venv/bin/python hack/gen_config_reference.py"
            )
            sys.exit(1)
        return
    DOC.write_text(text)


if __name__ == "__main__":
    main()
