"""``directstream-operator``'s leader election flags: defaults, checks, clear messages."""

from __future__ import annotations

import os
import socket

import pytest

from directstream.operator import operator_main
from directstream.operator.core.leadership import ElectionSettings
from directstream.operator.operator_main import build_parser, election_config


def config(*flags: str) -> operator_main.controller.ElectionConfig:
    return election_config(build_parser().parse_args(["--namespace=streams", *flags]))


def test_defaults_outside_a_cluster(monkeypatch: pytest.MonkeyPatch):
    for name in ("DIRECTSTREAM_POD_NAME", "DIRECTSTREAM_POD_UID", "DIRECTSTREAM_POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(operator_main, "SERVICE_ACCOUNT_NAMESPACE", operator_main.Path("/nonexistent"))
    got = config()
    assert (got.namespace, got.name) == ("default", "directstream-operator")
    assert got.identity == f"{socket.gethostname()}_{os.getpid()}"
    assert got.settings == ElectionSettings()


def test_in_a_pod_the_identity_is_the_pods_name_and_uid(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DIRECTSTREAM_POD_NAME", "ds-directstream-7d9f-abcde")
    monkeypatch.setenv("DIRECTSTREAM_POD_UID", "0b1c")
    monkeypatch.setenv("DIRECTSTREAM_POD_NAMESPACE", "ops")
    got = config()
    assert (got.namespace, got.identity) == ("ops", "ds-directstream-7d9f-abcde_0b1c")
    assert config("--leader-elect-identity=me", "--leader-elect-resource-namespace=x").identity == "me"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--leader-elect-lease-duration=1500ms"], "whole seconds"),
        (["--leader-elect-lease-duration=10s"], "longer than the renew deadline"),
        (["--leader-elect-retry-period=9s"], "retry period"),
        (["--leader-elect-renew-deadline=soon"], "is not a duration"),
    ],
)
def test_bad_timings_are_refused_with_a_message(flags: list[str], message: str):
    with pytest.raises(ValueError, match=message):
        config(*flags)


def test_the_operator_exits_2_with_the_message(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        operator_main.main(["--namespace=x", "--leader-elect-lease-duration=5s"])
    assert exited.value.code == 2
    assert "longer than the renew deadline" in capsys.readouterr().err
