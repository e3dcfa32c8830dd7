"""nginx in front of three real nodes, configured from config/nginx/livecommerce.conf the
way scripts/cluster renders it: WebSocket clients spread over the nodes without sticky
sessions and still share rooms; with the sticky variant a client that starts on HTTP
long-polling upgrades to WebSocket through nginx."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import socketio

from tests.production.conftest import StartCluster
from tests.production.helpers import eventually, live_room
from tests.support.client import Api, Client
from tests.support.nginx import node_connections
from tests.support.servers import add_user, mint_token

ApiFactory = Callable[[str], Api]


def _comment_ids(client: Client) -> set[str]:
    return {item["id"] for batch in client.received("comment:batch") for item in batch["items"]}


async def test_websocket_clients_spread_over_the_nodes_and_share_a_room(
    start_cluster: StartCluster, redis_url: str, db_url: str, api_factory: ApiFactory
) -> None:
    cluster = await start_cluster(redis_url)
    api = api_factory(cluster.url)  # the HTTP API through nginx as well
    host, staff = await add_user(db_url, "anchor", "host"), await add_user(db_url, "ops", "staff")
    rid, pids = await live_room(api, host, nodes=[n.url for n in cluster.nodes])
    viewers = [Client(cluster.url, mint_token(f"u_spread_{i}", f"viewer {i}")) for i in range(6)]
    host_client = Client(cluster.url, host)
    try:
        for viewer in viewers:  # one after the other: least_conn sees each open socket
            await viewer.connect()
        # No stickiness, no affinity: nginx spread the sockets evenly over the three nodes.
        counts = await node_connections(api, staff, expect_total=6)
        assert sorted(counts) == ["n1", "n2", "n3"]
        assert sorted(counts.values()) == [2, 2, 2], counts
        await host_client.connect()
        for viewer in (*viewers, host_client):
            await viewer.ok("room:join", {"room_id": rid})

        # Everyone says something; everyone, on every node, hears everyone.
        sent = [
            (await v.ok("comment:send", {"room_id": rid, "text": f"hello from {i}"}))["id"]
            for i, v in enumerate(viewers)
        ]
        for viewer in (*viewers, host_client):
            await eventually(lambda v=viewer: set(sent) <= _comment_ids(v), timeout=10)
        await host_client.ok("product:pin", {"room_id": rid, "product_id": pids[1]})
        for viewer in viewers:
            pinned = await viewer.wait_for("product:pinned", timeout=10)
            assert pinned["product"]["id"] == pids[1] and pinned["room_id"] == rid

        # Presence adds up across the nodes, read through nginx; pages and /metrics pass too.
        async def seven_online() -> bool:
            return bool((await api.ok("GET", f"/api/rooms/{rid}"))["online"] == 7)

        await eventually(seven_online, timeout=10)
        status, page = await api.request("GET", f"/rooms/{rid}")
        assert status == 200 and "<html" in page.lower()
        status, metrics = await api.request("GET", "/metrics")
        assert status == 200 and "livecommerce_" in metrics
    finally:
        await asyncio.gather(*(c.close() for c in (*viewers, host_client)))


class PollingClient:
    """A python-socketio client that starts on HTTP long-polling (``transports``)."""

    def __init__(self, url: str, token: str, transports: list[str]) -> None:
        self.url = url
        self.token = token
        self.transports = transports
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []

        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))

        self.sio.on("*", record)

    async def connect(self) -> None:
        await self.sio.connect(
            self.url, auth={"token": self.token}, transports=self.transports, wait_timeout=10
        )

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        ack = await self.sio.call(event, data, timeout=10)
        assert isinstance(ack, dict) and ack.get("ok") is True, f"{event} -> {ack}"
        return ack

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]


async def test_long_polling_works_and_upgrades_behind_the_sticky_variant(
    start_cluster: StartCluster, redis_url: str, db_url: str, api_factory: ApiFactory
) -> None:
    cluster = await start_cluster(redis_url, sticky=True)
    site = cluster.nginx.site.read_text()
    assert "\n    hash $remote_addr consistent;" in site and "\n    least_conn;" not in site
    api = api_factory(cluster.url)
    host, staff = await add_user(db_url, "anchor", "host"), await add_user(db_url, "ops", "staff")
    rid, pids = await live_room(api, host, nodes=[n.url for n in cluster.nodes])

    upgrading = PollingClient(cluster.url, mint_token("u_up", "upgrader"), ["polling", "websocket"])
    polling = PollingClient(cluster.url, mint_token("u_poll", "poller"), ["polling"])
    host_client: Client | None = None
    try:
        # The handshake goes over polling; Engine.IO then probes a WebSocket for the same
        # session (2probe/3probe) and switches to it (5), all through nginx.
        await upgrading.connect()
        assert upgrading.sio.transport() == "websocket"
        await polling.connect()
        counts = await node_connections(api, staff, expect_total=2)
        # Same client address, same node: that is what the hash does.
        (sticky_node,) = [node for node, n in counts.items() if n == 2]
        for client in (upgrading, polling):
            await client.call("room:join", {"room_id": rid})
        assert polling.sio.transport() == "polling"  # several long-poll round trips so far

        # The host talks to another node directly: the room still crosses over.
        other = next(n for n in cluster.nodes if n.node_id != sticky_node)
        host_client = Client(other.url, host)
        await host_client.connect()
        await host_client.ok("room:join", {"room_id": rid})
        await host_client.ok("product:pin", {"room_id": rid, "product_id": pids[2]})
        sent = (await host_client.ok("comment:send", {"room_id": rid, "text": "over polling?"}))[
            "id"
        ]
        for client in (upgrading, polling):
            await eventually(lambda c=client: len(c.received("product:pinned")) == 1, timeout=10)
            assert client.received("product:pinned")[0]["product"]["id"] == pids[2]
            await eventually(
                lambda c=client: any(
                    i["id"] == sent for b in c.received("comment:batch") for i in b["items"]
                ),
                timeout=10,
            )
        # Acting works on both transports too.
        for n, client in enumerate((upgrading, polling)):
            await client.call("comment:send", {"room_id": rid, "text": f"typed {n}"})
        await upgrading.sio.disconnect()

        # nginx's log: the first request opened a session over polling, and a WebSocket
        # carrying an existing session id (an upgrade, not a fresh socket) got its 101.
        def socket_io_requests() -> list[str]:
            log = (cluster.nginx.prefix / "access.log").read_text()
            return [line for line in log.splitlines() if "/socket.io/" in line]

        await eventually(lambda: any(" 101 " in r for r in socket_io_requests()), timeout=5)
        requests = socket_io_requests()
        assert "GET /socket.io/?transport=polling&EIO=4" in requests[0].replace("&t=", "&")
        upgrades = [r for r in requests if "transport=websocket" in r and "sid=" in r]
        assert len(upgrades) == 1 and " 101 " in upgrades[0], requests
    finally:
        for client in (upgrading, polling):
            if client.sio.connected:
                # The close packet goes out at once, but python-engineio answers the poll
                # still pending only at the next ping (20 s) and its client waits for that
                # answer: stop waiting after a second.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.sio.disconnect(), 1)
                await client.sio.eio.disconnect(abort=True)
        if host_client is not None:
            await host_client.close()
