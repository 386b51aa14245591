"""Alert webhooks: endpoints as data, and a deliverer for the outbox.

Every ``ai_token_alerts`` row an endpoint subscribes to writes one
``ai_webhook_deliveries`` row in the alert's transaction (supabase/schemas/19_webhooks.sql).
:class:`WebhookDeliverer` claims due rows under a lease (``claim_webhook_deliveries``, FOR
UPDATE SKIP LOCKED, so several deliverers never send one delivery at the same time),
POSTs each signed in the Standard Webhooks format with the ``standardwebhooks`` library
(``webhook-id`` is the delivery's id, the same on every retry) and reports the attempt
(``complete_webhook_delivery``): the database schedules retries with the endpoint's
capped exponential backoff and gives up after its ``max_attempts``.

:meth:`WebhookDeliverer.run` is the long-running worker: it drains what is due, then
waits for ``NOTIFY ai_webhook_deliveries`` (with a database URL), the next scheduled
retry, or the poll interval, whichever comes first.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import httpx
from pydantic import BaseModel, TypeAdapter
from standardwebhooks import Webhook

from tokens_client._admin import TokensAdmin
from tokens_client._base import Call
from tokens_client._errors import ConfigurationError, Conflict, InvalidRequest, ServiceUnavailable

NOTIFY_CHANNEL = "ai_webhook_deliveries"
USER_AGENT = "tokens-client-webhooks/1"
_MOMENT = TypeAdapter(datetime)


def new_webhook_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: ``whsec_`` + 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, webhook_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the signature covers id, time, body)."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
    }


class WebhookEndpoint(BaseModel):
    """An endpoint as ``set_webhook_endpoint`` answers it (never with its secret)."""

    id: UUID
    organization_id: UUID
    url: str
    alert_kinds: list[str] | None
    description: str | None
    max_attempts: int
    retry_base_seconds: int
    retry_cap_seconds: int
    created_at: datetime
    updated_at: datetime


class ClaimedDelivery(BaseModel):
    """A delivery leased to this deliverer: what to send, and the lease to report with."""

    id: UUID
    lease_id: UUID
    attempt: int
    url: str
    secret: str
    event_type: str
    body: str


@dataclass(frozen=True)
class DeliveryResult:
    """One attempt: its HTTP status or error, and the delivery's status afterwards
    (``delivered``, ``pending`` for a retry, ``failed``, or ``lease_lost``)."""

    delivery_id: str
    attempt: int
    event_type: str
    url: str
    ok: bool
    http_status: int | None
    error: str | None
    status: str
    next_attempt_at: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _rpc(admin: TokensAdmin, name: str, params: dict[str, Any]) -> Any:
    return admin._execute(admin._rpc_call(name, params))


def set_webhook_endpoint(
    admin: TokensAdmin,
    organization_id: UUID | str,
    url: str,
    secret: str,
    *,
    alert_kinds: Sequence[str] | None = None,
    description: str | None = None,
    max_attempts: int = 8,
    retry_base_seconds: int = 60,
    retry_cap_seconds: int = 21600,
) -> WebhookEndpoint:
    """Create, or replace the settings of, the organization's endpoint for ``url``.

    ``alert_kinds`` None subscribes to every kind. Raises InvalidRequest (reasons
    invalid_webhook_url, invalid_webhook_secret, unknown_alert_kind, invalid_request),
    OrganizationNotFound.
    """
    data = _rpc(
        admin,
        "set_webhook_endpoint",
        {
            "organization_id": str(organization_id),
            "url": url,
            "secret": secret,
            "alert_kinds": list(alert_kinds) if alert_kinds is not None else None,
            "description": description,
            "max_attempts": max_attempts,
            "retry_base_seconds": retry_base_seconds,
            "retry_cap_seconds": retry_cap_seconds,
        },
    )
    return WebhookEndpoint(**data)


def delete_webhook_endpoint(admin: TokensAdmin, endpoint_id: UUID | str) -> None:
    """Remove an endpoint and its deliveries. Raises NotFound (webhook_endpoint_not_found)."""
    _rpc(admin, "delete_webhook_endpoint", {"endpoint_id": str(endpoint_id)})


def webhook_endpoints(admin: TokensAdmin, organization_id: UUID | str) -> list[WebhookEndpoint]:
    """The organization's endpoints, by URL (without secrets)."""
    columns = ",".join(WebhookEndpoint.model_fields)
    return admin._execute(
        Call(
            lambda supabase: (
                supabase.table("ai_webhook_endpoints")
                .select(columns)
                .eq("organization_id", str(organization_id))
                .order("url")
            ),
            lambda rows: [WebhookEndpoint(**row) for row in rows],
        )
    )


class WebhookDeliverer:
    """Delivers the webhook outbox through the service-role API.

    ``lease_seconds`` must exceed ``batch`` * ``timeout``: a lease that ran out lets
    another deliverer send the same delivery again (same webhook-id: at least once).
    """

    def __init__(
        self,
        admin: TokensAdmin,
        *,
        batch: int = 10,
        lease_seconds: int = 120,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        if not 1 <= batch <= 1000:
            raise InvalidRequest("batch must be between 1 and 1000", facts={"field": "batch"})
        if timeout <= 0 or lease_seconds <= batch * timeout:
            raise InvalidRequest(
                "lease_seconds must exceed batch * timeout",
                facts={"batch": batch, "timeout": timeout, "lease_seconds": lease_seconds},
            )
        self.admin = admin
        self.batch = batch
        self.lease_seconds = lease_seconds
        self._http = http or httpx.Client(timeout=timeout, follow_redirects=False)
        self._owns_http = http is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> WebhookDeliverer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def claim(self) -> list[ClaimedDelivery]:
        """Lease up to ``batch`` due deliveries."""
        rows = _rpc(
            self.admin,
            "claim_webhook_deliveries",
            {"max_deliveries": self.batch, "lease_seconds": self.lease_seconds},
        )
        return [ClaimedDelivery(**row) for row in rows]

    def send(self, delivery: ClaimedDelivery) -> DeliveryResult:
        """POST one claimed delivery, signed now, and report the attempt."""
        http_status: int | None = None
        error: str | None = None
        try:
            headers = signed_headers(
                delivery.secret, str(delivery.id), delivery.body, datetime.now(timezone.utc)
            )
            response = self._http.post(
                delivery.url,
                content=delivery.body.encode(),
                headers={
                    **headers,
                    "content-type": "application/json",
                    "user-agent": USER_AGENT,
                },
            )
            http_status = response.status_code
            if not 200 <= http_status < 300:
                error = f"HTTP {http_status}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:1000]
        ok = error is None
        try:
            outcome = _rpc(
                self.admin,
                "complete_webhook_delivery",
                {
                    "delivery_id": str(delivery.id),
                    "lease_id": str(delivery.lease_id),
                    "ok": ok,
                    "http_status": http_status,
                    "error": error,
                },
            )
            status, next_attempt_at = outcome["status"], outcome.get("next_attempt_at")
        except Conflict:  # webhook_lease_lost: the lease ran out and was claimed again
            status, next_attempt_at = "lease_lost", None
        return DeliveryResult(
            str(delivery.id),
            delivery.attempt,
            delivery.event_type,
            delivery.url,
            ok,
            http_status,
            error,
            status,
            next_attempt_at,
        )

    def deliver_due(self) -> list[DeliveryResult]:
        """One claim, each claimed delivery sent and reported."""
        return [self.send(delivery) for delivery in self.claim()]

    def drain(self) -> list[DeliveryResult]:
        """Claim and send until nothing is due (retries scheduled later wait)."""
        results: list[DeliveryResult] = []
        while True:
            batch = self.deliver_due()
            results.extend(batch)
            if len(batch) < self.batch:
                return results

    def seconds_until_next_due(self) -> float | None:
        """How long until the earliest pending delivery is due (None: nothing pending)."""
        rows = self.admin._execute(
            Call(
                lambda supabase: (
                    supabase.table("ai_webhook_deliveries")
                    .select("next_attempt_at")
                    .eq("status", "pending")
                    .order("next_attempt_at")
                    .limit(1)
                ),
                lambda data: data,
            )
        )
        if not rows:
            return None
        due = _MOMENT.validate_python(rows[0]["next_attempt_at"])
        return max(0.0, (due - datetime.now(timezone.utc)).total_seconds())

    def run(
        self,
        *,
        db_url: str | None = None,
        poll_interval: float = 30.0,
        stop: threading.Event | None = None,
        on_result: Callable[[DeliveryResult], None] | None = None,
    ) -> None:
        """Deliver until ``stop`` is set: drain, then sleep until a NOTIFY (when
        ``db_url`` is given), the next scheduled retry or ``poll_interval`` seconds.
        While the API is unreachable (ServiceUnavailable) it keeps trying.

        Raises ConfigurationError when ``db_url`` is given but psycopg is missing.
        """
        stop = stop or threading.Event()
        listener = _Listener(db_url) if db_url else None
        try:
            while not stop.is_set():
                try:
                    for result in self.drain():
                        if on_result is not None:
                            on_result(result)
                    until_due = self.seconds_until_next_due()
                except ServiceUnavailable:  # the API is down for now: try again soon
                    until_due = min(poll_interval, 5.0)
                wait = poll_interval if until_due is None else min(poll_interval, until_due)
                if listener is not None:
                    listener.wait(max(wait, 0.05), stop)
                else:
                    stop.wait(max(wait, 0.05))
        finally:
            if listener is not None:
                listener.close()


class _Listener:
    """``LISTEN ai_webhook_deliveries`` on a direct database connection."""

    def __init__(self, db_url: str) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is in the dev and webhooks extras
            raise ConfigurationError(
                "waking on NOTIFY needs psycopg: pip install 'tokens-client[webhooks]'"
            ) from None
        self._connection = psycopg.connect(db_url, autocommit=True)
        self._connection.execute(f"listen {NOTIFY_CHANNEL}")

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Return on the first notification, after ``seconds``, or soon after ``stop``."""
        remaining = seconds
        while remaining > 0 and not stop.is_set():
            step = min(remaining, 1.0)
            for _ in self._connection.notifies(timeout=step, stop_after=1):
                return
            remaining -= step

    def close(self) -> None:
        self._connection.close()
