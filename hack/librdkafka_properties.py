"""Print the client settings the installed librdkafka knows, as the Python tuple in
executor/directstream/executor/contract/librdkafka_properties.py (run after a confluent-kafka upgrade).

librdkafka describes its own properties (``rd_kafka_conf_properties_show``); settings set through the
API rather than as text (callbacks, opaque pointers: "see dedicated API") are left out.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import tempfile

import confluent_kafka


def properties() -> list[str]:
    libs = os.path.join(
        os.path.dirname(confluent_kafka.__file__), "..", "confluent_kafka.libs", "librdkafka*"
    )
    rdkafka = ctypes.CDLL(sorted(glob.glob(libs))[0])
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "properties.md")
        handle = libc.fopen(path.encode(), b"w")
        rdkafka.rd_kafka_conf_properties_show(ctypes.c_void_p(handle))
        libc.fclose(ctypes.c_void_p(handle))
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    names: list[str] = []
    for line in lines:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or cells[0] in ("Property", "") or cells[0].startswith("-"):
            continue
        if "see dedicated API" in cells[-1] or cells[0] in names:
            continue
        names.append(cells[0])
    return sorted(names)


if __name__ == "__main__":
    sys.stdout.write(f"# librdkafka {confluent_kafka.libversion()[0]}\n")
    for name in properties():
        sys.stdout.write(f'    "{name}",\n')
