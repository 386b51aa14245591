"""What the gateway and PostgREST let through, byte for byte, as an attacker sees them.

Raw sockets, so that nothing between the test and the gateway parses or cleans the
status line and headers: the apikey rules of Supabase's gateway (needed, exact), no
caller-controlled bytes in a status line or header, and JWTs Supabase Auth would never
sign (no ``exp``, a ``sub`` that is not a uuid) refused with a reason.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from dataclasses import dataclass
from uuid import UUID

import jwt
import pytest

from tokens_client.stack import Stack, mint_jwt
from tokens_client.testing import StackEnv, TestUser

INJECTED = "zz\r\nSet-Cookie: pwned=1\r\nX-Injected: yes\r\n\r\n<html>pwned</html>"


@dataclass
class Raw:
    status_line: str
    headers: dict[str, str]
    header_block: str
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def reason(self) -> str | None:
        return json.loads(json.loads(self.body)["details"])["reason"]


def raw_request(
    env: StackEnv, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> Raw:
    url = urllib.parse.urlsplit(env.url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    with socket.create_connection((url.hostname, url.port or 80), timeout=15) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    head_text = head.decode("latin-1")
    status_line, *header_lines = head_text.split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        rest = _dechunk(rest)
    return Raw(status_line, parsed, head_text, rest)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def assert_clean(response: Raw, what: str) -> None:
    """Nothing the caller sent reached the status line or a header; the body is JSON."""
    for marker in ("pwned", "Injected", "zz"):
        assert marker not in response.header_block, f"{what}: {response.header_block!r}"
    assert "set-cookie" not in response.headers, what
    assert response.headers.get("content-type", "").startswith("application/json"), (
        f"{what}: {response.headers}"
    )


# ------------------------------------------------------------------ apikey


def user_rpc(env: StackEnv, user: TestUser, name: str, body: dict[str, object]) -> Raw:
    return raw_request(
        env,
        "POST",
        f"/rest/v1/rpc/{name}",
        {"apikey": env.anon_key, "Authorization": f"Bearer {user.access_token}"},
        json.dumps(body).encode(),
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/rest/v1/rpc/get_token_stats"), ("GET", "/functions/v1/tokens/stats")],
)
def test_rest_and_functions_need_an_apikey(
    stack_env: StackEnv, member: TestUser, method: str, path: str
) -> None:
    body = b"{}" if method == "POST" else b""
    with_user_only = raw_request(
        stack_env, method, path, {"Authorization": f"Bearer {member.access_token}"}, body
    )
    assert with_user_only.status == 401
    assert json.loads(with_user_only.body)["reason"] == "missing_api_key"
    user_jwt_as_apikey = raw_request(stack_env, method, path, {"apikey": member.access_token}, body)
    assert user_jwt_as_apikey.status == 401
    assert json.loads(user_jwt_as_apikey.body)["reason"] == "invalid_api_key"


def test_health_dashboard_and_the_stripe_webhook_need_no_apikey(stack_env: StackEnv) -> None:
    assert raw_request(stack_env, "GET", "/health", {}).status == 200
    if Stack().status().api_url == stack_env.url:
        assert raw_request(stack_env, "GET", "/dashboard/", {}).status == 200
    # Stripe sends no apikey: the webhook is reached and refuses the unsigned event itself.
    webhook = raw_request(stack_env, "POST", "/functions/v1/stripe-webhook", {}, b"{}")
    assert webhook.status == 400
    assert json.loads(webhook.body)["reason"] == "invalid_signature"


def test_keys_are_compared_exactly(stack_env: StackEnv, pro_org: UUID) -> None:
    status = Stack().status()
    if not status.running or status.api_url != stack_env.url:
        pytest.skip("the opaque keys tested here are those of our local stack")
    body = json.dumps({"organization_id": str(pro_org)}).encode()
    path = "/rest/v1/rpc/get_token_stats"
    assert raw_request(stack_env, "POST", path, {"apikey": status.secret_key}, body).status == 200
    for variant in (
        status.secret_key.upper(),
        status.secret_key.swapcase(),
        status.secret_key[:-1],
    ):
        refused = raw_request(stack_env, "POST", path, {"apikey": variant}, body)
        assert refused.status == 401, variant
        assert json.loads(refused.body)["reason"] == "invalid_api_key"
        as_bearer = raw_request(
            stack_env,
            "POST",
            path,
            {"apikey": status.publishable_key, "Authorization": f"Bearer {variant}"},
            body,
        )
        assert as_bearer.status == 401, variant  # not the service role: PostgREST refuses it


# ------------------------------------------------------- response splitting

NOWHERE = "00000000-0000-4000-8000-000000000000"


def user_calls(usage_id: str) -> list[tuple[str, dict[str, object]]]:
    """Every RPC a user may call, with CR/LF in each of its text arguments."""
    return [
        ("has_enough_tokens", {"feature": INJECTED}),
        ("deduct_tokens", {"feature": INJECTED}),
        ("deduct_tokens", {"feature": "ask_assistant", "request_id": INJECTED}),
        ("deduct_tokens", {"feature": "generate_goal", "organization_id": INJECTED}),
        ("reserve_tokens", {"feature": INJECTED, "estimate": 1}),
        ("reserve_tokens", {"feature": "ask_assistant", "estimate": 1, "request_id": INJECTED}),
        ("get_token_stats", {"organization_id": INJECTED}),
        ("get_usage_report", {"organization_id": NOWHERE, "group_by": INJECTED}),
        ("refund_deduction", {"usage_id": usage_id, "reason": INJECTED * 40}),
        ("refund_deduction", {"usage_id": INJECTED}),
        ("commit_reservation", {"reservation_id": INJECTED, "actual": 1}),
        ("release_reservation", {"reservation_id": INJECTED}),
    ]


def service_calls(organization: str) -> list[tuple[str, dict[str, object]]]:
    """Every service-role RPC, with CR/LF in each of its text arguments."""
    return [
        ("initialize_tokens", {"organization_id": organization, "plan": INJECTED}),
        ("set_organization_plan", {"organization_id": organization, "plan": INJECTED}),
        (
            "set_organization_plan",
            {"organization_id": organization, "plan": "pro", "event_id": INJECTED * 20},
        ),
        ("grant_tokens", {"organization_id": organization, "token_type": INJECTED, "amount": 1}),
        (
            "grant_tokens",
            {
                "organization_id": organization,
                "token_type": "general",
                "amount": 1,
                "reason": INJECTED * 20,
            },
        ),
        (
            "grant_tokens",
            {
                "organization_id": organization,
                "token_type": "general",
                "amount": 1,
                "external_id": INJECTED * 20,
            },
        ),
        ("set_enforcement_mode", {"mode": INJECTED, "organization_id": organization}),
        ("set_rate_limit", {"max_requests": 5, "window_seconds": 60, "plan": INJECTED}),
        ("set_rate_limit", {"max_requests": 5, "window_seconds": 60, "feature": INJECTED}),
        ("verify_token_ledger", {"organization_id": INJECTED}),
    ]


def test_no_rpc_echoes_input_into_the_status_line_or_headers(
    stack_env: StackEnv, org_admin: TestUser, pro_org: UUID
) -> None:
    spent = user_rpc(stack_env, org_admin, "deduct_tokens", {"feature": "ask_assistant"})
    usage_id = json.loads(spent.body)["usage_id"]
    user_auth = {"apikey": stack_env.anon_key, "Authorization": f"Bearer {org_admin.access_token}"}
    service_auth = {"apikey": stack_env.service_role_key}
    calls = [(user_auth, name, args) for name, args in user_calls(usage_id)]
    calls += [(service_auth, name, args) for name, args in service_calls(str(pro_org))]
    for auth, name, args in calls:
        what = f"POST {name} {sorted(args)}"
        response = raw_request(
            stack_env, "POST", f"/rest/v1/rpc/{name}", auth, json.dumps(args).encode()
        )
        assert response.status < 500, f"{what}: {response.status_line}"
        assert_clean(response, what)
    # The read-only RPCs also answer GET, with the arguments in the query string.
    for name, args in [
        ("has_enough_tokens", {"feature": INJECTED}),
        ("get_token_stats", {"organization_id": INJECTED}),
        ("get_usage_report", {"organization_id": str(pro_org), "group_by": INJECTED}),
    ]:
        query = urllib.parse.urlencode(args, quote_via=urllib.parse.quote)
        response = raw_request(stack_env, "GET", f"/rest/v1/rpc/{name}?{query}", user_auth)
        assert 400 <= response.status < 500, f"GET {name}: {response.status_line}"
        assert_clean(response, f"GET {name}")


def test_refusals_carry_the_input_in_the_json_details_only(
    stack_env: StackEnv, member: TestUser
) -> None:
    response = user_rpc(stack_env, member, "deduct_tokens", {"feature": INJECTED})
    assert response.status_line == "HTTP/1.1 404 Unknown feature"
    details = json.loads(json.loads(response.body)["details"])
    assert details == {"reason": "unknown_feature", "feature": INJECTED}


def test_edge_functions_echo_no_input_into_headers(stack_env: StackEnv, member: TestUser) -> None:
    auth = {"apikey": stack_env.anon_key, "Authorization": f"Bearer {member.access_token}"}
    check = [
        {"organizationId": INJECTED, "featureUsed": "generate_goal", "action": "check"},
        {"featureUsed": INJECTED, "action": "check"},
        {"featureUsed": INJECTED, "action": "deduct"},
        {"featureUsed": "ask_assistant", "action": INJECTED},
        {"featureUsed": "ask_assistant", "action": "deduct", "requestId": INJECTED},
    ]
    for body in check:
        response = raw_request(
            stack_env,
            "POST",
            "/functions/v1/tokens/check-balance",
            auth,
            json.dumps(body).encode(),
        )
        assert 400 <= response.status < 500, f"{body}: {response.status_line}"
        assert_clean(response, f"check-balance {sorted(body)}")
        assert json.loads(response.body)["reason"]
    query = urllib.parse.quote(INJECTED)
    for path in (
        f"/functions/v1/tokens/stats?organizationId={query}",
        f"/functions/v1/tokens/{query}",
    ):
        response = raw_request(stack_env, "GET", path, auth)
        assert 400 <= response.status < 500, f"{path}: {response.status_line}"
        assert_clean(response, path)


# ----------------------------------------------------------------- the JWT


def test_a_jwt_without_exp_is_refused(stack_env: StackEnv, member: TestUser) -> None:
    claims = {"sub": str(member.id), "role": "authenticated", "aud": "authenticated"}
    forever = mint_jwt(stack_env.jwt_secret, claims)

    payload = jwt.decode(
        forever, stack_env.jwt_secret, algorithms=["HS256"], audience="authenticated"
    )
    del payload["exp"]
    no_exp = jwt.encode(payload, stack_env.jwt_secret, algorithm="HS256")
    auth = {"apikey": stack_env.anon_key, "Authorization": f"Bearer {no_exp}"}
    body = json.dumps({"feature": "ask_assistant"}).encode()
    rest = raw_request(stack_env, "POST", "/rest/v1/rpc/deduct_tokens", auth, body)
    assert rest.status == 401
    assert rest.reason() == "invalid_jwt"
    edge = raw_request(
        stack_env,
        "POST",
        "/functions/v1/tokens/check-balance",
        auth,
        json.dumps({"featureUsed": "ask_assistant", "action": "check"}).encode(),
    )
    assert edge.status == 401
    assert json.loads(edge.body)["reason"] == "invalid_jwt"


def test_a_sub_that_is_not_a_uuid_is_invalid_jwt(stack_env: StackEnv) -> None:
    token = mint_jwt(
        stack_env.jwt_secret, {"sub": "not-a-uuid", "role": "authenticated", "aud": "authenticated"}
    )
    auth = {"apikey": stack_env.anon_key, "Authorization": f"Bearer {token}"}
    for name, args in [("deduct_tokens", {"feature": "ask_assistant"}), ("get_token_stats", {})]:
        response = raw_request(
            stack_env, "POST", f"/rest/v1/rpc/{name}", auth, json.dumps(args).encode()
        )
        assert response.status == 401, response.body
        assert response.reason() == "invalid_jwt"
    table = raw_request(stack_env, "GET", "/rest/v1/ai_tokens?select=balance", auth)
    assert table.status == 401
    assert table.reason() == "invalid_jwt"
