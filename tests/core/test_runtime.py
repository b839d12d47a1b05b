"""The runtime every service shares (core/): the service runner, the worker pool,
the admin listener's Bearer check and the rise/fall health counter, seen through
real processes, real listeners on loopback and raw sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.edns
import dns.message
import pytest
from aiohttp import web
from support import GEOIP

from pinedge.core.auth import BearerToken
from pinedge.core.health import RiseFall
from pinedge.core.workers import CHECK_EVERY, CRASH_LIMIT, SPAWN, WorkerPool, backoff
from pinedge.origin import OriginConfig, start

HOST = "127.0.0.1"
TOKEN = "s3cret-runtime-token"
CITY = GEOIP / "GeoLite2-City-Test.mmdb"
LONDON = dns.edns.ECSOption("81.2.69.142", 32)


# ── rise and fall ────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("results", "verdicts"),
    [
        pytest.param("ff", "uD", id="up-goes-down-after-fall-failures"),
        pytest.param("fsf", "uuu", id="a-success-between-failures-keeps-it-up"),
        pytest.param("ffss", "uDdU", id="down-comes-up-after-rise-successes"),
        pytest.param("ffsfs", "uDddd", id="a-failure-between-successes-keeps-it-down"),
    ],
)
def test_a_target_changes_verdict_only_after_rise_or_fall_results_in_a_row(
    results: str, verdicts: str
) -> None:
    """Verdicts: u/d up or down, capitals where record() said it changed."""
    health = RiseFall(rise=2, fall=2)
    seen = ""
    for result in results:
        changed = health.record(result == "s")
        letter = "u" if health.up else "d"
        seen += letter.upper() if changed else letter
    assert seen == verdicts


def test_a_target_can_start_down_and_rise_and_fall_cannot_be_zero() -> None:
    health = RiseFall(rise=1, fall=3, up=False)
    assert health.record(True) and health.up and health.streak == 1
    with pytest.raises(ValueError):
        RiseFall(rise=0, fall=1)


# ── the Bearer check ─────────────────────────────────────────────────────────


@asynccontextmanager
async def guarded(token: str | None, unset: str | None) -> AsyncIterator[int]:
    """A listener on loopback whose one route is behind a BearerToken; its port."""
    check = BearerToken(token, realm="test", ask="send the token", unset=unset)

    async def handler(request: web.Request) -> web.Response:
        refused = check.check(request)
        return refused.response() if refused is not None else web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/change", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def raw_post(port: int, path: str, authorization: bytes | None) -> tuple[int, str, str]:
    """POST with exactly these Authorization bytes; status, WWW-Authenticate, body."""
    head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n" % path.encode()
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    head_text, _, body = answer.decode("utf-8", "replace").partition("\r\n\r\n")
    status = int(head_text.split(" ", 2)[1])
    challenge = ""
    for line in head_text.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "www-authenticate":
            challenge = value.strip()
    return status, challenge, body


REFUSED_AUTHORIZATIONS = {
    "none": None,
    "wrong": b"Bearer wrong",
    "another-scheme": b"Basic " + TOKEN.encode(),
    "no-token": b"Bearer",
    "not-utf8": b"Bearer \xff\xfe",
    "the-token-and-a-byte-more": b"Bearer " + TOKEN.encode() + b"\xff",
}


@pytest.mark.parametrize(
    "authorization", REFUSED_AUTHORIZATIONS.values(), ids=REFUSED_AUTHORIZATIONS.keys()
)
async def test_a_request_without_the_right_bearer_token_gets_401_with_a_challenge(
    authorization: bytes | None,
) -> None:
    async with guarded(TOKEN, "set a token first") as port:
        status, challenge, body = await raw_post(port, "/change", authorization)
    assert status == 401
    assert challenge.startswith("Bearer ")
    assert "send the token" in json.loads(body)["error"]


async def test_the_right_bearer_token_is_let_through_whatever_the_scheme_case() -> None:
    async with guarded(TOKEN, "set a token first") as port:
        for scheme in (b"Bearer", b"bearer", b"BEARER"):
            status, _, body = await raw_post(port, "/change", scheme + b" " + TOKEN.encode())
            assert (status, json.loads(body)) == (200, {"ok": True})


async def test_without_a_configured_token_changes_get_403_saying_how_to_set_one() -> None:
    async with guarded(None, "set PINEDGE_ADMIN_TOKEN first") as port:
        status, challenge, body = await raw_post(port, "/change", b"Bearer " + TOKEN.encode())
    assert status == 403 and challenge == ""
    assert "PINEDGE_ADMIN_TOKEN" in json.loads(body)["error"]


async def test_a_listener_open_without_a_token_lets_everything_through() -> None:
    async with guarded(None, None) as port:
        status, _, _ = await raw_post(port, "/change", None)
    assert status == 200


# ── the worker pool ──────────────────────────────────────────────────────────


def test_the_pause_before_replacing_a_worker_dead_at_start_up_doubles_up_to_a_ceiling() -> None:
    assert [backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.slow
async def test_a_worker_that_keeps_dying_at_start_up_is_given_up_on_after_the_limit() -> None:
    started = []

    def start_process(slot: int) -> BaseProcess:
        process = SPAWN.Process(target=os._exit, args=(3,))
        process.start()
        started.append((slot, process))
        return process

    pool = WorkerPool(start_process, slots=4, stop_timeout=1.0)
    pool.start(1)
    async with asyncio.timeout(60):
        while pool.replace_dead():
            await asyncio.sleep(CHECK_EVERY)
    assert len(started) == CRASH_LIMIT
    assert pool.restarts == CRASH_LIMIT - 1
    assert {slot for slot, _ in started} == {0}  # each replacement took its predecessor's slot
    assert all(process.exitcode == 3 for _, process in started)


# ── the service runner ───────────────────────────────────────────────────────

SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from pinedge.core import logs
    from pinedge.core.runner import run

    class Service:
        async def start(self):
            print("started", flush=True)

        async def stop(self):
            print("stopping", flush=True)
            await asyncio.sleep(float(sys.argv[1]))
            print("stopped", flush=True)

    logs.setup("INFO")
    sys.exit(run([Service()], reload=lambda: print("reloaded", flush=True),
                 deadline=float(sys.argv[2])))
    """
)


def service(stop_takes: float, deadline: float) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", SERVICE, str(stop_takes), str(deadline)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_service_reloads_on_sighup_and_on_sigterm_drains_then_exits_0() -> None:
    with service(0.2, 10) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "started\n"
            process.send_signal(signal.SIGHUP)
            assert process.stdout.readline() == "reloaded\n"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
            assert process.stdout.read() == "stopping\nstopped\n"
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.slow
def test_a_service_that_does_not_stop_within_its_deadline_exits_1_saying_so() -> None:
    with service(60, 0.5) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "started\n"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=20) == 1
            assert process.stdout.read() == "stopping\n"
            assert process.stderr is not None
            assert "did not finish stopping within 0.5s" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()


# ── the DNS server's workers and admin listener ──────────────────────────────


def dns_config(geoip: Path) -> str:
    return textwrap.dedent(
        f"""
        geoip = "{geoip}"
        rrl_rate = 0

        [[zones]]
        name = "cdn.test."
        records = [{{ name = "www", type = "A", value = "192.0.2.1" }}]
        steered = [{{ name = "img" }}]

        [[pops]]
        name = "lon"
        latitude = 51.5
        longitude = -0.13
        addresses = ["198.51.100.1"]

        [[pops]]
        name = "sto"
        latitude = 59.3
        longitude = 18.1
        addresses = ["198.51.100.41"]
        """
    )


def free_port() -> int:
    """A port free for both TCP and UDP on loopback."""
    while True:
        with socket.socket() as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
                return port


def children(pid: int) -> set[int]:
    """The worker processes `pid` started (multiprocessing's spawn children)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found


@dataclass
class DnsNode:
    process: asyncio.subprocess.Process
    port: int
    admin: str
    log: Path

    async def ready(self, client: aiohttp.ClientSession) -> str:
        async with client.get(self.admin + "/readyz") as response:
            return f"{response.status} {await response.text()}"


@asynccontextmanager
async def running_dns(
    client: aiohttp.ClientSession, tmp_path: Path, geoip: Path, workers: int
) -> AsyncIterator[DnsNode]:
    config = tmp_path / "dns.toml"
    config.write_text(dns_config(geoip))
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "PINEDGE_CONFIG"}
    env["PINEDGE_ADMIN_TOKEN"] = TOKEN
    log = tmp_path / "dns.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pinedge", "dns", "--config", str(config),
            "--listen", f"{HOST}:{port}", "--admin", f"{HOST}:{admin}", "--workers", str(workers),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    node = DnsNode(process, port, f"http://{HOST}:{admin}", log)
    try:
        async with asyncio.timeout(30):
            while True:
                assert process.returncode is None, log.read_text()
                try:
                    async with client.get(node.admin + "/healthz") as response:
                        if response.status == 200 and udp_sockets_bound(port) == workers:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield node
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await process.wait()


def udp_sockets_bound(port: int) -> int:
    """How many UDP sockets are bound to `port` (from /proc/net/udp)."""
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}"))


async def steered_pop(port: int) -> str:
    """The POP a London client is sent to for img.cdn.test., asked from a new socket."""
    query = dns.message.make_query("img.cdn.test.", "A", use_edns=0, options=[LONDON])
    answer = await dns.asyncquery.udp(query, HOST, port=port, timeout=5)
    addresses = {item.address for rrset in answer.answer for item in rrset}
    return {"198.51.100.1": "lon", "198.51.100.41": "sto"}.get(min(addresses, default=""), "?")


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.slow
async def test_a_dns_worker_killed_is_replaced_and_follows_the_verdicts_given_before(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with running_dns(client, tmp_path, CITY, workers=2) as node:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        verdict = {"pop": "lon", "up": False}
        async with client.post(node.admin + "/health", json=verdict, headers=auth) as response:
            assert response.status == 200
        (victim,) = children(node.process.pid)
        os.kill(victim, signal.SIGKILL)
        async with asyncio.timeout(30):
            while not children(node.process.pid) - {victim} or udp_sockets_bound(node.port) < 2:
                await asyncio.sleep(0.1)
        assert (await node.ready(client)).startswith("200 ready: 2 of 2")
        # Each new socket has its own source port: both processes get some of them.
        async with asyncio.timeout(10):
            while {await steered_pop(node.port) for _ in range(24)} != {"sto"}:
                await asyncio.sleep(0.1)
        assert node.process.returncode is None


@pytest.mark.slow
async def test_dns_workers_that_keep_dying_at_start_up_stop_the_server_with_exit_1(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    geoip = tmp_path / "city.mmdb"
    geoip.write_bytes(CITY.read_bytes())
    async with running_dns(client, tmp_path, geoip, workers=2) as node:
        geoip.unlink()  # a new worker cannot read its database: it dies at start-up
        (victim,) = children(node.process.pid)
        os.kill(victim, signal.SIGKILL)
        async with asyncio.timeout(90):
            code = await node.process.wait()
    assert code == 1
    assert "keep dying at start-up" in node.log.read_text()


@pytest.mark.slow
async def test_the_dns_admin_refuses_a_bad_token_with_401_and_a_challenge_never_500(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with running_dns(client, tmp_path, CITY, workers=1) as node:
        port = int(node.admin.rsplit(":", 1)[1])
        for name, authorization in REFUSED_AUTHORIZATIONS.items():
            for path in ("/reload", "/health"):
                status, challenge, _ = await raw_post(port, path, authorization)
                assert (status, challenge.split(" ")[0]) == (401, "Bearer"), (name, path)
        assert node.process.returncode is None


# ── the edge's workers ───────────────────────────────────────────────────────


@pytest.mark.slow
async def test_edge_workers_that_keep_dying_at_start_up_stop_the_node_with_exit_1(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    log = tmp_path / "edge.log"
    # The supervisor's socket for its workers goes under TMPDIR, where the test can reach it.
    env = {**os.environ, "PINEDGE_CONFIG": "", "TMPDIR": str(tmp_path)}
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pinedge", "edge", "--listen", f"{HOST}:{port}",
            "--admin", f"{HOST}:{admin}", "--origin", "http://127.0.0.1:9", "--workers", "2",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while True:
                assert process.returncode is None, log.read_text()
                try:
                    async with client.get(f"http://{HOST}:{admin}/readyz") as response:
                        if (await response.text()).startswith("ready: 2 of 2"):
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        (socket_path,) = tmp_path.glob("pinedge-*/owner.sock")
        socket_path.unlink()  # a new worker cannot reach the store's owner: it dies at start-up
        os.kill(min(children(process.pid)), signal.SIGKILL)
        async with asyncio.timeout(90):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 1
    assert "keep dying at start-up" in log.read_text()


# ── the origin's control listener ────────────────────────────────────────────


async def test_the_origin_control_listener_answers_health_readiness_and_counts_requests(
    client: aiohttp.ClientSession,
) -> None:
    origin = await start(OriginConfig(listen=f"{HOST}:0", admin=f"{HOST}:0"))
    try:
        async with client.get(origin.url + "/api/pins/1") as response:
            assert response.status == 200
        for path, expected in (("/healthz", "ok\n"), ("/readyz", "ready\n")):
            async with client.get(origin.admin_url + path) as response:
                assert (response.status, await response.text()) == (200, expected)
                assert response.headers["Cache-Control"] == "no-store"
        async with client.get(origin.admin_url + "/metrics") as response:
            assert "\npinedge_origin_requests_total 1\n" in await response.text()
    finally:
        await origin.cleanup()
