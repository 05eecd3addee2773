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
    return HEADER + "\n".join(rows(spec, "spec")) + "\n"


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
