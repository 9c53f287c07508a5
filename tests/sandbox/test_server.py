"""SimulatorServer over real loopback HTTP: lifecycle, keep-alive, TCP_NODELAY, dropped answers."""
from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest
import requests
from werkzeug.wrappers import Request, Response

from sandbox.server import DropConnection, SimulatorServer

commits: list[str] = []


@Request.application
def probe_app(request: Request) -> Response:
    """Tells the client what the server sees of its connection."""
    if request.path == "/drop":
        commits.append(request.get_data(as_text=True))
        raise DropConnection(reset=request.args.get("reset") == "1")
    if request.path == "/boom":
        raise RuntimeError("the app failed")
    if request.path == "/ignore-body":
        return Response("ignored")
    sock: socket.socket = request.environ["werkzeug.socket"]
    nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    body = request.get_data()
    return Response(f"{request.environ['REMOTE_PORT']} {nodelay} {len(body)}")


def sandbox_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sandbox-")]


def test_starts_on_an_ephemeral_loopback_port_and_stops_cleanly():
    # Given a server started as a context manager
    with SimulatorServer(probe_app) as server:
        # Then it listens on loopback at a port the system chose
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        assert requests.get(server.url + "/", timeout=5).status_code == 200
        # ... and an idle keep-alive connection is still open when it stops
        idle = requests.Session()
        idle.get(server.url + "/", timeout=5)
        assert sandbox_threads()
    # When it has stopped
    # Then no thread of it is left and the port refuses connections
    assert sandbox_threads() == []
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/", timeout=5)
    idle.close()


def test_start_and_stop_without_a_context_manager_and_stop_is_idempotent():
    server = SimulatorServer(probe_app).start()
    assert requests.get(server.url + "/", timeout=5).ok
    server.stop()
    server.stop()
    assert sandbox_threads() == []
    with pytest.raises(RuntimeError):
        server.start()


def test_a_taken_port_is_an_oserror_not_an_exit():
    with SimulatorServer(probe_app) as server:
        with pytest.raises(OSError, match=str(server.port)):
            SimulatorServer(probe_app, port=server.port).start()


def test_one_session_keeps_one_connection_alive_with_nodelay():
    # Given a server and one requests.Session
    with SimulatorServer(probe_app) as server, requests.Session() as session:
        # When it makes 50 requests
        started = time.perf_counter()
        answers = [session.get(server.url + "/", timeout=5) for _ in range(50)]
        elapsed = time.perf_counter() - started
    # Then they all arrived on the same connection, which has Nagle disabled
    ports = {a.text.split()[0] for a in answers}
    assert len(ports) == 1
    assert {a.text.split()[1] for a in answers} == {"1"}
    assert all(a.headers.get("Connection") != "close" for a in answers)
    # and they were not Nagle-slow (~45 ms each): a sanity bound, many times the expected time
    assert elapsed < 2.0


def test_a_body_the_app_did_not_read_does_not_break_the_next_request():
    # Given a keep-alive connection
    with SimulatorServer(probe_app) as server, requests.Session() as session:
        # When the app ignores one request's body, and the next is sent chunked
        first = session.post(server.url + "/ignore-body", data=b"x" * 10_000, timeout=5)
        chunked = session.post(server.url + "/", data=iter([b"abc", b"defg"]), timeout=5)
        after = session.get(server.url + "/", timeout=5)
    # Then every answer is right and the connection was the same throughout
    assert first.text == "ignored"
    assert chunked.text.split()[2] == "7"
    assert chunked.text.split()[0] == after.text.split()[0]


def test_http_1_0_and_connection_close_are_honoured():
    with SimulatorServer(probe_app) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/", headers={"Connection": "close"})
        answer = conn.getresponse()
        assert answer.status == 200
        assert answer.getheader("Connection") == "close"
        answer.read()
        conn.close()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_dropped_answer_sends_nothing_after_the_commit(reset):
    commits.clear()
    with SimulatorServer(probe_app) as server, requests.Session() as session:
        # Given a connection already used once
        assert session.get(server.url + "/", timeout=5).ok
        # When the app commits, then drops the answer
        with pytest.raises(requests.ConnectionError):
            session.post(server.url + f"/drop?reset={int(reset)}", data="mv-1", timeout=5)
        # Then the write happened once, and the server carries on
        assert commits == ["mv-1"]
        assert session.get(server.url + "/", timeout=5).ok


def test_dropped_answer_is_remote_disconnected_without_a_status_line():
    with SimulatorServer(probe_app) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("POST", "/drop", body=b"mv-2")
        with pytest.raises(http.client.RemoteDisconnected):
            conn.getresponse()
        conn.close()


def test_an_app_exception_is_a_500_and_the_connection_stays_usable():
    with SimulatorServer(probe_app) as server, requests.Session() as session:
        assert session.get(server.url + "/boom", timeout=5).status_code == 500
        assert session.get(server.url + "/", timeout=5).status_code == 200
