"""The pool executor's loop without a driver: it gives up, with a message that says where it looked."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from directstream.executor.contract.wire import EXIT_DRIVER_UNREACHABLE
from directstream.executor.pool_worker import Client, Worker, main
from directstream.executor.reader import ReaderOptions


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_executor_that_cannot_reach_the_driver_exits_with_why(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    worker = Worker(Client(url, "t", "1-1"), "s", ReaderOptions(), threading.Event(), unreachable_timeout=0.5)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        code = worker.serve()
    assert code == EXIT_DRIVER_UNREACHABLE
    assert time.monotonic() - started < 10
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert url in message and "0.5s" in message and "NetworkPolicy" in message, message


def test_a_stopped_worker_exits_cleanly_while_the_driver_is_away() -> None:
    stop = threading.Event()
    worker = Worker(Client(f"http://127.0.0.1:{closed_port()}", "t", "1-1"), "s", ReaderOptions(), stop)
    stop.set()
    assert worker.serve() == 0


def test_main_refuses_a_nonpositive_unreachable_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIRECTSTREAM_POOL_TOKEN", "t")
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "--url",
                "http://127.0.0.1:1",
                "--executor-id",
                "1",
                "--stream",
                "s",
                "--unreachable-timeout",
                "0",
            ]
        )
    assert exited.value.code == 2
