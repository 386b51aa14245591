"""Alerts by webhook, end to end: real alerts, the real outbox, a real HTTP receiver.

The receiver is Python's http.server on localhost in a thread; it records every request
and answers what the test says (or is not listening at all). Signatures are checked
with the published ``standardwebhooks`` library. Retry spacing is read from the attempt
times the database recorded, never from the test's own clock.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from typer.testing import CliRunner

from tokens_client import (
    InsufficientTokens,
    InvalidRequest,
    NotFound,
    TokensAdmin,
    WebhookDeliverer,
    WebhookEndpoint,
    delete_webhook_endpoint,
    new_webhook_secret,
    set_webhook_endpoint,
    webhook_endpoints,
)
from tokens_client.cli import app
from tokens_client.testing import Database, OrgFactory, StackEnv, UserFactory

KINDS = {"usage_80_percent", "balance_below_20_percent", "balance_exhausted", "refused"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1 recording each POST; ``status`` is its answer."""

    status: int = 204
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        with socket.socket() as probe:  # a free port, kept for down() / up()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> Counter[str]:
        return Counter(r.headers["webhook-id"] for r in self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.down()


EndpointFactory = Callable[..., tuple[WebhookEndpoint, str]]


@pytest.fixture
def make_endpoint(admin: TokensAdmin) -> Iterator[EndpointFactory]:
    """An endpoint with a fresh secret, deleted (with its deliveries) afterwards."""
    made: list[WebhookEndpoint] = []

    def factory(org: uuid.UUID, url: str, **settings: Any) -> tuple[WebhookEndpoint, str]:
        secret = new_webhook_secret()
        endpoint = set_webhook_endpoint(admin, org, url, secret, **settings)
        made.append(endpoint)
        return endpoint, secret

    yield factory
    for endpoint in made:
        with suppress(NotFound):
            delete_webhook_endpoint(admin, endpoint.id)


def alert(db: Database, org: uuid.UUID, kind: str = "refused") -> int:
    """An alert row as the spending functions write it (the trigger queues deliveries)."""
    return int(
        db.value(
            # a bucket of its own per row: refusals are counted one row per user, reason, hour
            "insert into public.ai_token_alerts"
            " (organization_id, token_type, kind, reason, period, bucket)"
            " values (%s, 'general', %s, 'insufficient_tokens', now(), clock_timestamp())"
            " returning id",
            (org, kind),
        )
    )


def deliveries(db: Database, endpoint: WebhookEndpoint) -> list[dict[str, Any]]:
    rows = db.execute(
        "select id::text, alert_id, status, attempts, last_http_status from "
        "public.ai_webhook_deliveries where endpoint_id = %s order by alert_id",
        (endpoint.id,),
    )
    keys = ("id", "alert_id", "status", "attempts", "last_http_status")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def attempts(db: Database, delivery_id: str) -> list[tuple[Any, ...]]:
    """(attempt, claimed_at, finished_at, ok, http_status, retry_at) in order."""
    return db.execute(
        "select attempt, claimed_at, finished_at, ok, http_status, retry_at from "
        "public.ai_webhook_delivery_attempts where delivery_id = %s order by attempt",
        (delivery_id,),
    )


def wait_for(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll until ``condition`` holds; a limit on waiting, not a timing assertion."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextmanager
def running_worker(admin: TokensAdmin, stack_env: StackEnv, **options: Any) -> Iterator[None]:
    """``WebhookDeliverer.run`` in a thread, listening for NOTIFY; stopped afterwards."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            with WebhookDeliverer(admin, timeout=2, lease_seconds=60, **options) as worker:
                worker.run(db_url=stack_env.db_url, poll_interval=0.5, stop=stop)
        except BaseException as error:  # surfaced in the test below
            failures.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures


def verified(received: Received, secret: str) -> Any:
    """The body, once the standardwebhooks library accepts its signature."""
    return Webhook(secret).verify(received.body, received.headers)


# ------------------------------------------------------------------ delivery


def test_every_alert_kind_of_real_spending_is_delivered_signed(
    admin: TokensAdmin,
    db: Database,
    make_org: OrgFactory,
    make_user: UserFactory,
    make_endpoint: EndpointFactory,
    receiver: Receiver,
) -> None:
    org = make_org("pro")
    everything, secret = make_endpoint(org, receiver.url + "/all")
    refusals, refusals_secret = make_endpoint(
        org, receiver.url + "/refused", alert_kinds=["refused"]
    )
    receiver.up()
    with make_user(org).client() as client:
        for _ in range(11):  # 50 lead_generation tokens at 5: 80 % used, < 20 %, 0, refused
            with suppress(InsufficientTokens):
                client.deduct_tokens("generate_leads")
    alerts = db.execute(
        "select id, kind from public.ai_token_alerts where organization_id = %s order by id",
        (org,),
    )
    assert {kind for _, kind in alerts} == KINDS

    with WebhookDeliverer(admin, timeout=5) as worker:
        results = [r for r in worker.drain() if r.url.startswith(receiver.url)]
    assert len(results) == len(alerts) + sum(kind == "refused" for _, kind in alerts)
    assert all(r.ok and r.status == "delivered" and r.attempt == 1 for r in results)

    to_all = [verified(r, secret) for r in receiver.requests if r.path.endswith("/all")]
    assert sorted(p["data"]["alert_id"] for p in to_all) == [i for i, _ in alerts]
    assert {p["type"] for p in to_all} == {f"ai_token_alert.{kind}" for kind in KINDS}
    assert all(p["data"]["organization_id"] == str(org) for p in to_all)
    to_refused = [
        verified(r, refusals_secret) for r in receiver.requests if r.path.endswith("/refused")
    ]
    assert [p["data"]["kind"] for p in to_refused] == [k for _, k in alerts if k == "refused"]
    # The webhook-id is the outbox row's id; each was sent once.
    rows = deliveries(db, everything) + deliveries(db, refusals)
    assert receiver.ids() == Counter({row["id"]: 1 for row in rows})
    assert {row["status"] for row in rows} == {"delivered"}
    with pytest.raises(WebhookVerificationError):
        verified(receiver.requests[0], new_webhook_secret())


def test_a_receiver_down_for_a_while_loses_nothing_and_retries_follow_the_backoff(
    admin: TokensAdmin,
    db: Database,
    stack_env: StackEnv,
    make_org: OrgFactory,
    make_endpoint: EndpointFactory,
    receiver: Receiver,
) -> None:
    org = make_org("pro")
    endpoint, secret = make_endpoint(
        org, receiver.url, max_attempts=8, retry_base_seconds=1, retry_cap_seconds=2
    )
    with running_worker(admin, stack_env):
        alert_ids = [alert(db, org, kind) for kind in ("refused", "usage_80_percent", "refused")]
        # Nothing listens on the port: every attempt fails until two have failed each.
        wait_for(
            lambda: all(row["attempts"] >= 3 for row in deliveries(db, endpoint)),
            "three attempts of each delivery",
        )
        receiver.up()
        wait_for(
            lambda: all(row["status"] == "delivered" for row in deliveries(db, endpoint)),
            "every delivery to arrive once the receiver is up",
        )
    rows = deliveries(db, endpoint)
    assert [row["alert_id"] for row in rows] == alert_ids
    assert receiver.ids() == Counter({row["id"]: 1 for row in rows})
    assert sorted(verified(r, secret)["data"]["alert_id"] for r in receiver.requests) == alert_ids
    for row in rows:
        tried = attempts(db, row["id"])
        assert [a[0] for a in tried] == list(range(1, row["attempts"] + 1))
        assert [a[3] for a in tried] == [False] * (len(tried) - 1) + [True]
        for (n, _, finished, _, _, retry_at), following in itertools.pairwise(tried):
            # min(cap, base * 2^(n-1)): 1 s, then 2 s, 2 s, ...
            assert retry_at - finished == timedelta(seconds=min(2, 2 ** (n - 1)))
            assert following[1] >= retry_at, "a retry never starts before it is due"
        assert tried[-1][5] is None


def test_a_receiver_failing_forever_is_given_up_after_max_attempts(
    admin: TokensAdmin,
    db: Database,
    stack_env: StackEnv,
    make_org: OrgFactory,
    make_endpoint: EndpointFactory,
    receiver: Receiver,
) -> None:
    org = make_org("pro")
    endpoint, secret = make_endpoint(
        org, receiver.url, max_attempts=3, retry_base_seconds=1, retry_cap_seconds=1
    )
    receiver.status = 500
    receiver.up()
    with running_worker(admin, stack_env):
        alert(db, org)
        wait_for(lambda: deliveries(db, endpoint)[0]["status"] == "failed", "giving up")
    [row] = deliveries(db, endpoint)
    assert (row["status"], row["attempts"], row["last_http_status"]) == ("failed", 3, 500)
    assert receiver.ids() == Counter({row["id"]: 3})
    assert all(verified(r, secret)["type"] == "ai_token_alert.refused" for r in receiver.requests)
    assert [(a[3], a[4]) for a in attempts(db, row["id"])] == [(False, 500)] * 3
    failed_at = db.value(
        "select failed_at from public.ai_webhook_deliveries where id = %s", (row["id"],)
    )
    assert failed_at is not None
    with WebhookDeliverer(admin) as worker:  # given up: never sent again
        worker.drain()
    assert len(receiver.requests) == 3


def test_two_workers_racing_deliver_each_event_once(
    stack_env: StackEnv,
    db: Database,
    make_org: OrgFactory,
    make_endpoint: EndpointFactory,
    receiver: Receiver,
) -> None:
    org = make_org("pro")
    endpoint, secret = make_endpoint(org, receiver.url)
    receiver.up()
    alert_ids = [alert(db, org) for _ in range(30)]
    start = threading.Barrier(2)
    results: list[list[Any]] = [[], []]

    def work(index: int) -> None:
        with (
            TokensAdmin(stack_env.url, stack_env.service_role_key) as admin,
            WebhookDeliverer(admin, batch=3, timeout=5) as worker,
        ):
            start.wait()
            results[index] = worker.drain()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    rows = deliveries(db, endpoint)
    assert [row["alert_id"] for row in rows] == alert_ids
    assert {row["status"] for row in rows} == {"delivered"}
    assert receiver.ids() == Counter({row["id"]: 1 for row in rows})
    sent = [r.delivery_id for both in results for r in both if r.url == receiver.url]
    assert sorted(sent) == sorted(row["id"] for row in rows), "no delivery sent by both"
    assert all(len(attempts(db, row["id"])) == 1 for row in rows)
    assert all(verified(r, secret)["data"]["kind"] == "refused" for r in receiver.requests)


# --------------------------------------------------------------- endpoints


def test_bad_endpoints_are_refused_with_a_reason_and_change_nothing(
    admin: TokensAdmin, make_org: OrgFactory
) -> None:
    org = make_org("pro")
    good = new_webhook_secret()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": "ftp://hooks.example.test/x", "secret": good}, "invalid_webhook_url"),
        ({"url": "javascript:alert(1)", "secret": good}, "invalid_webhook_url"),
        ({"url": "https://hooks.example.test/x", "secret": ""}, "invalid_request"),
        ({"url": "https://hooks.example.test/x", "secret": "hunter2"}, "invalid_webhook_secret"),
        (
            {"url": "https://hooks.example.test/x", "secret": good, "alert_kinds": ["lunch"]},
            "unknown_alert_kind",
        ),
    ]
    for arguments, reason in cases:
        with pytest.raises(InvalidRequest) as refused:
            set_webhook_endpoint(admin, org, **arguments)
        assert (refused.value.reason, refused.value.status) == (reason, 400), arguments
        assert "lunch" not in refused.value.message
        assert "hunter2" not in refused.value.message
    assert webhook_endpoints(admin, org) == []


def test_the_cli_sets_lists_delivers_once_and_deletes(
    db: Database, make_org: OrgFactory, receiver: Receiver
) -> None:
    org = make_org("pro")
    receiver.up()
    runner = CliRunner()
    made = runner.invoke(app, ["webhooks", "set", str(org), receiver.url, "--json"])
    assert made.exit_code == 0, made.output
    endpoint = json.loads(made.stdout)
    listed = runner.invoke(app, ["webhooks", "list", str(org), "--json"])
    assert [e["url"] for e in json.loads(listed.stdout)] == [receiver.url]
    assert "secret" not in json.loads(listed.stdout)[0]
    alert(db, org, "balance_exhausted")
    delivered = runner.invoke(app, ["webhooks", "deliver", "--once", "--json"])
    assert delivered.exit_code == 0, delivered.output
    mine = [r for r in json.loads(delivered.stdout) if r["url"] == receiver.url]
    assert [(r["event_type"], r["status"]) for r in mine] == [
        ("ai_token_alert.balance_exhausted", "delivered")
    ]
    assert verified(receiver.requests[0], endpoint["secret"])["data"]["kind"] == "balance_exhausted"
    bad = runner.invoke(app, ["webhooks", "set", str(org), "ftp://x.example.test"])
    assert bad.exit_code == 1
    assert bad.stderr.strip().startswith("error:")
    assert "(invalid_webhook_url)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    gone = runner.invoke(app, ["webhooks", "delete", endpoint["id"]])
    assert gone.exit_code == 0, gone.output
    assert json.loads(runner.invoke(app, ["webhooks", "list", str(org), "--json"]).stdout) == []
