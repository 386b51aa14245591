"""The TokenDashboard (``<token-dashboard>``) in real headless Chromium against the stack.

Debian's /usr/bin/chromium is driven by Playwright for Python (never a downloaded
browser); the page is the local gateway's ``/dashboard/``, the data real PostgREST under
each user's own JWT. Every test makes its own organizations and users, fails on any
console error it did not expect, and saves a screenshot of each state it reaches in
``.artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Route,
    expect,
    sync_playwright,
)

from tokens_client._browser import browser_session, storage_key
from tokens_client.stack import Stack
from tokens_client.testing import Database, OrgFactory, StackEnv, TestUser, UserFactory

PROJECT = Path(__file__).resolve().parents[1]
SCREENSHOTS = PROJECT / ".artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN_TYPES_OF_PRO = 5


@pytest.fixture(scope="module")
def dashboard_url(stack_env: StackEnv) -> str:
    """The local gateway's dashboard page (another stack under test serves none)."""
    url = f"{stack_env.url}/dashboard/"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers.get_content_type() == "text/html"
    except OSError:
        if Stack().status().api_url != stack_env.url:
            pytest.skip(
                "the dashboard page is served by the local stack; another stack is under test"
            )
        raise
    return url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def react_app(tmp_path_factory: pytest.TempPathFactory) -> str:
    """web/test/react-harness.tsx bundled (React in development mode, so it warns)."""
    out = tmp_path_factory.mktemp("react") / "app.js"
    subprocess.run(
        [
            str(PROJECT / "node_modules" / ".bin" / "esbuild"),
            "web/test/react-harness.tsx",
            "--bundle",
            "--format=iife",
            "--jsx=automatic",
            '--define:process.env.NODE_ENV="development"',
            f"--outfile={out}",
            "--log-level=warning",
        ],
        cwd=PROJECT,
        check=True,
        timeout=120,
    )
    return out.read_text()


@dataclass
class Dashboard:
    """One page showing ``<token-dashboard>``; ``shot`` saves what it shows now."""

    page: Page
    test_name: str
    console_errors: list[str] = field(default_factory=list)
    expected_errors: list[re.Pattern[str]] = field(default_factory=list)

    @property
    def element(self) -> Any:
        return self.page.locator("token-dashboard")

    def wait_for(self, state: str) -> None:
        expect(self.element).to_have_attribute("state", state)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{self.test_name}-{name}.png", full_page=True)

    def card(self, token_type: str) -> Any:
        return self.page.locator(f'li.type[data-token-type="{token_type}"]')

    def text(self) -> str:
        return str(self.element.inner_text())

    def unexpected_errors(self) -> list[str]:
        return [
            error
            for error in self.console_errors
            if not any(pattern.search(error) for pattern in self.expected_errors)
        ]


OpenDashboard = Callable[..., Dashboard]


@pytest.fixture
def open_dashboard(
    browser: Browser,
    dashboard_url: str,
    stack_env: StackEnv,
    request: pytest.FixtureRequest,
    react_app: str,
) -> Iterator[OpenDashboard]:
    """Open the page signed in as ``user`` (None: signed out) with the element's attributes."""
    opened: list[Dashboard] = []
    contexts = []

    def open_page(
        user: TestUser | None,
        *,
        organization_id: uuid.UUID | None = None,
        plan: str | None = None,
        supabase_url: str | None = None,
        before: Callable[[Page], None] | None = None,
        wait: str | None = None,
        react: bool = False,
    ) -> Dashboard:
        context = browser.new_context(viewport={"width": 1024, "height": 900})
        contexts.append(context)
        if user is not None:
            session = browser_session(
                user.access_token,
                user_id=str(user.id),
                email=user.email,
                expires_in=3600,
                full_name=user.full_name,
            )
            key = storage_key(supabase_url or stack_env.url)
            context.add_init_script(
                f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(session))})"
            )
        page = context.new_page()
        dashboard = Dashboard(page, request.node.name)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                where = message.location.get("url", "")
                dashboard.console_errors.append(f"{message.text} ({where})")

        page.on("console", console)
        page.on("pageerror", lambda error: dashboard.console_errors.append(f"pageerror: {error}"))
        if before is not None:
            before(page)
        query = {"supabase-url": supabase_url or stack_env.url, "anon-key": stack_env.anon_key}
        if organization_id is not None:
            query["organization-id"] = str(organization_id)
        if plan is not None:
            query["plan"] = plan
        if react:
            # the React app on a page of the same origin, as a Next.js page would be
            # (a text page first, for the origin: its favicon is not the gateway's business)
            page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
            page.goto(f"{stack_env.url}/health")
            page.set_content(
                '<!doctype html><html lang="en"><link rel="icon" href="data:,"><div id="root">'
            )
            page.evaluate(
                "config => { window.harnessConfig = config; }",
                {
                    "supabaseUrl": query["supabase-url"],
                    "anonKey": query["anon-key"],
                    "organizationId": query.get("organization-id"),
                    "plan": plan,
                },
            )
            page.add_script_tag(content=react_app)
        else:
            page.goto(dashboard_url + "?" + urllib.parse.urlencode(query))
        if wait is not None:
            dashboard.wait_for(wait)
        opened.append(dashboard)
        return dashboard

    yield open_page
    errors = [error for dashboard in opened for error in dashboard.unexpected_errors()]
    for context in contexts:
        context.close()
    assert errors == [], "console errors in the browser"


def balances(db: Database, organization_id: uuid.UUID) -> dict[str, tuple[int, int]]:
    rows = db.execute(
        "select token_type, balance, total_allocated from ai_tokens where organization_id = %s",
        (organization_id,),
    )
    return {token_type: (balance, allocated) for token_type, balance, allocated in rows}


def deduct_in_page(dashboard: Dashboard, feature: str) -> dict[str, Any]:
    """Spend through the element's own supabase-js client, then tell it with ``spent()``."""
    result: dict[str, Any] = dashboard.element.evaluate(
        """async (element, feature) => {
            const { data, error } = await element.client.rpc("deduct_tokens", { feature });
            if (error) throw new Error(error.message);
            element.spent(data);
            return data;
        }""",
        feature,
    )
    return result


# ------------------------------------------------------------------------------ build


def test_committed_build_equals_a_fresh_build(tmp_path: Path) -> None:
    """web/dist is what `node web/build.mjs` makes from web/src with the pinned esbuild."""
    subprocess.run(
        ["node", "web/build.mjs", "--outdir", str(tmp_path)],
        cwd=PROJECT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    dist = PROJECT / "web" / "dist"
    committed = sorted(str(p.relative_to(dist)) for p in dist.rglob("*") if p.is_file())
    fresh = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert committed == fresh
    assert {"token-dashboard.js", "react.mjs", "react.d.mts", "types/react.d.ts"} <= set(fresh)
    for name in fresh:
        assert (PROJECT / "web" / "dist" / name).read_bytes() == (tmp_path / name).read_bytes(), (
            f"web/dist/{name} is stale: run `npm run build:web` and commit it"
        )


def test_what_users_install_holds_no_development_session() -> None:
    """The shipped build and the Python package carry no JWT and no dev-session file."""
    for path in (PROJECT / "web" / "dist").rglob("*.*"):
        text = path.read_text()
        assert "dev-session" not in text
        assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", text), f"a JWT in {path.name}"
    package = PROJECT / "src" / "tokens_client"
    assert not list(package.rglob("dev-session*"))
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".stack/dashboard/dev-session.json"],
        cwd=PROJECT,
        check=False,
    )
    assert ignored.returncode == 0


def test_gateway_serves_the_page_and_the_committed_build(dashboard_url: str) -> None:
    with urllib.request.urlopen(dashboard_url + "token-dashboard.js", timeout=10) as response:
        assert response.headers.get_content_type() == "text/javascript"
        served = response.read()
    assert served == (PROJECT / "web" / "dist" / "token-dashboard.js").read_bytes()


# ------------------------------------------------------------------------- balances


def test_numbers_after_a_deduction_match_the_database(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID, db: Database
) -> None:
    owner = make_user(pro_org, "owner", "Olivia Owner")
    dashboard = open_dashboard(owner, organization_id=pro_org, wait="ready")
    goals = dashboard.card("goal_generation")
    expect(goals.locator(".count")).to_have_text("20 / 20")
    expect(dashboard.page.locator(".warning")).to_have_count(0)
    dashboard.shot("before")

    result = deduct_in_page(dashboard, "generate_goal")
    assert result["remaining_balance"] == 17
    expect(dashboard.page.locator(".notice")).to_have_text(
        "Used 3 tokens for generate_goal · 17 left"
    )
    expect(goals.locator(".count")).to_have_text("17 / 20")
    bar = dashboard.page.get_by_role("progressbar", name="Goal generation")
    expect(bar).to_have_attribute("aria-valuenow", "17")
    expect(bar).to_have_attribute("aria-valuemax", "20")
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(bar).to_have_attribute("aria-valuetext", "17 of 20 tokens left (85 %)")
    expect(goals.locator(".percent")).to_have_text("85 %")
    dashboard.shot("after")

    stored = balances(db, pro_org)
    assert stored["goal_generation"] == (17, 20)
    assert dashboard.page.locator("li.type").count() == len(stored) == TOKEN_TYPES_OF_PRO
    for token_type, (balance, allocated) in stored.items():
        expect(dashboard.card(token_type).locator(".count")).to_have_text(
            f"{balance:,} / {allocated:,}"
        )
    refresh = dashboard.card("goal_generation").locator(".refresh time")
    stored_refresh = db.value(
        "select to_char(refresh_date at time zone 'UTC', 'YYYY-MM-DD') from ai_tokens "
        "where organization_id = %s and token_type = 'goal_generation'",
        (pro_org,),
    )
    assert str(refresh.get_attribute("datetime")).startswith(stored_refresh)
    feature = dashboard.page.locator('table.by-feature tr[data-key="generate_goal"]')
    expect(feature.locator(".tokens")).to_have_text("3")


def test_held_and_purchased_tokens_are_shown(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID, admin: Any
) -> None:
    owner = make_user(pro_org, "owner")
    admin.grant_tokens(pro_org, token_type="general", amount=25, reason="a token pack")
    hold = owner.client().reserve_tokens("ask_assistant", estimate=4)
    dashboard = open_dashboard(owner, organization_id=pro_org, wait="ready")
    general = dashboard.card("general")
    expect(general.locator(".purchased")).to_have_text("25")
    expect(general.locator(".held")).to_have_text("4")
    expect(general.locator(".count")).to_have_text("75 / 50")
    bar = dashboard.page.get_by_role("progressbar", name="General")
    expect(bar).to_have_attribute("aria-valuemax", "75")
    dashboard.shot("held-and-purchased")
    owner.client().release_reservation(hold.reservation_id)


def test_warning_appears_under_twenty_percent(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID, db: Database
) -> None:
    owner = make_user(pro_org, "owner")
    client = owner.client()
    for _ in range(4):
        client.deduct_tokens("generate_goal")  # 4 goals of 3
    for _ in range(2):
        client.deduct_tokens("generate_quest")  # 2 quests of 2: 4 of 20 left, exactly 20 %
    dashboard = open_dashboard(owner, organization_id=pro_org, wait="ready")
    expect(dashboard.card("goal_generation").locator(".count")).to_have_text("4 / 20")
    expect(dashboard.page.locator(".warning")).to_have_count(0)
    dashboard.shot("at-20-percent")

    deduct_in_page(dashboard, "generate_quest")
    warning = dashboard.page.get_by_role("alert")
    expect(warning).to_contain_text("Running low on AI tokens")
    expect(warning).to_contain_text("Goal generation: 2 of 20 left (10 %)")
    expect(dashboard.card("goal_generation")).to_have_class(re.compile(r"\blow\b"))
    assert balances(db, pro_org)["goal_generation"] == (2, 20)
    dashboard.shot("warning")


# -------------------------------------------------------------------------- starter


@pytest.mark.parametrize("plan_prop", [None, "starter"], ids=["from-data", "plan-prop"])
def test_starter_shows_the_upgrade_prompt_instead_of_bars(
    open_dashboard: OpenDashboard,
    make_user: UserFactory,
    starter_org: uuid.UUID,
    plan_prop: str | None,
) -> None:
    owner = make_user(starter_org, "owner")
    dashboard = open_dashboard(owner, organization_id=starter_org, plan=plan_prop, wait="upgrade")
    expect(dashboard.page.get_by_role("heading", name=re.compile("not included"))).to_be_visible()
    expect(dashboard.page.get_by_role("progressbar")).to_have_count(0)
    button = dashboard.page.get_by_role("button", name="See plans and upgrade")
    dashboard.page.evaluate(
        "window.upgrades = 0; document.addEventListener('tokens-upgrade', () => window.upgrades++)"
    )
    button.focus()
    dashboard.page.keyboard.press("Enter")
    assert dashboard.page.evaluate("window.upgrades") == 1
    dashboard.shot("upgrade")


def test_a_plan_without_allocations_is_starter_whatever_its_name(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID
) -> None:
    """The guide's `plan` prop is looked up in ai_plan_allocations, not matched by name."""
    owner = make_user(pro_org, "owner")
    dashboard = open_dashboard(owner, organization_id=pro_org, plan="pro", wait="ready")
    expect(dashboard.page.get_by_role("progressbar")).to_have_count(TOKEN_TYPES_OF_PRO)
    other = open_dashboard(owner, organization_id=pro_org, plan="no-such-plan", wait="upgrade")
    expect(other.page.get_by_role("progressbar")).to_have_count(0)


# ------------------------------------------------------------------------- who sees


def test_a_member_of_another_organization_sees_nothing_of_it(
    open_dashboard: OpenDashboard,
    make_user: UserFactory,
    make_org: OrgFactory,
    admin: Any,
) -> None:
    name = f"Secret {uuid.uuid4().hex[:8]}"
    target = make_org("pro", name)
    make_user(target, "owner").client().deduct_tokens("generate_goal")
    outsider = make_user(make_org("pro"), "owner")
    dashboard = open_dashboard(outsider, organization_id=target, wait="not-a-member")
    expect(dashboard.element).to_contain_text("You are not a member of this organization")
    assert name not in dashboard.text()
    expect(dashboard.page.get_by_role("progressbar")).to_have_count(0)
    expect(dashboard.page.locator("table")).to_have_count(0)
    dashboard.shot("not-a-member")
    assert admin.stats(target).for_type("goal_generation").balance == 17


def test_a_user_without_an_organization_is_told_so(
    open_dashboard: OpenDashboard, make_user: UserFactory
) -> None:
    dashboard = open_dashboard(make_user(None), wait="not-a-member")
    dashboard.shot("no-organization")


def test_owner_sees_every_member_and_alerts_a_member_only_their_own(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID, db: Database
) -> None:
    owner = make_user(pro_org, "owner", "Olivia Owner")
    member = make_user(pro_org, "member", "Max Member")
    owner.client().deduct_tokens("generate_goal")
    for _ in range(5):
        owner.client().deduct_tokens("generate_goal")  # 18 of 20: alerts for the owner
    member.client().deduct_tokens("ask_assistant")
    member.client().deduct_tokens("generate_quest")
    spent = dict(
        db.execute(
            "select user_id, sum(tokens_deducted)::int from ai_token_usage_log "
            "where organization_id = %s group by user_id",
            (pro_org,),
        )
    )

    seen_by_owner = open_dashboard(owner, organization_id=pro_org, wait="ready")
    page = seen_by_owner.page
    expect(page.get_by_role("heading", name="Usage by member")).to_be_visible()
    rows = page.locator("table.by-member tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(f'table.by-member tr[data-key="{owner.id}"] .tokens')).to_have_text(
        str(spent[owner.id])
    )
    expect(page.locator(f'table.by-member tr[data-key="{member.id}"] th')).to_have_text(
        "Max Member"
    )
    expect(page.locator(f'table.by-member tr[data-key="{member.id}"] .tokens')).to_have_text(
        str(spent[member.id])
    )
    alerts = page.locator("section.alerts li")
    expect(alerts.first).to_be_visible()
    kinds = set(alerts.evaluate_all("items => items.map(item => item.dataset.kind)"))
    stored_kinds = {
        kind
        for (kind,) in db.execute(
            "select kind from ai_token_alerts where organization_id = %s", (pro_org,)
        )
    }
    assert kinds
    assert kinds <= stored_kinds
    seen_by_owner.shot("owner")

    seen_by_member = open_dashboard(member, organization_id=pro_org, wait="ready")
    page = seen_by_member.page
    expect(page.get_by_role("heading", name="Your usage")).to_be_visible()
    expect(page.locator("table.by-member tbody tr")).to_have_count(1)
    expect(page.locator("table.by-member tbody th")).to_have_text("Max Member")
    assert "Olivia Owner" not in seen_by_member.text()
    features = page.locator("table.by-feature tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.key)"
    )
    assert sorted(features) == ["ask_assistant", "generate_quest"]
    expect(page.locator("section.alerts")).to_have_count(0)
    seen_by_member.shot("member")

    # another organization's deduction is not this dashboard's news
    page.evaluate(
        "detail => document.dispatchEvent(new CustomEvent('tokens-spent', { detail }))",
        {"organization_id": str(uuid.uuid4()), "tokens_deducted": 5, "remaining_balance": 1},
    )
    # (dispatchEvent runs the listener before it returns: the notice would be set by now)
    assert "Used 5 tokens" not in page.locator(".notice").inner_text()
    # the app tells the dashboard about a deduction made elsewhere (its backend)
    result = member.client().deduct_tokens("ask_assistant")
    page.evaluate(
        "detail => document.dispatchEvent(new CustomEvent('tokens-spent', { detail }))",
        result.model_dump(mode="json"),
    )
    expect(page.locator(".notice")).to_have_text(
        f"Used 1 token for ask_assistant · {result.remaining_balance} left"
    )
    expect(seen_by_member.card("general").locator(".balance")).to_have_text(
        str(result.remaining_balance)
    )


# ---------------------------------------------------------------------------- React


def test_the_react_wrapper_takes_the_guides_props_and_last_spend(
    open_dashboard: OpenDashboard,
    make_user: UserFactory,
    pro_org: uuid.UUID,
    starter_org: uuid.UUID,
    db: Database,
) -> None:
    owner = make_user(pro_org, "owner")
    app = open_dashboard(owner, organization_id=pro_org, plan="pro", react=True, wait="ready")
    expect(app.page.locator("#react-state")).to_have_text("ready")
    expect(app.element).to_have_class("in-react")
    expect(app.card("goal_generation").locator(".count")).to_have_text("20 / 20")
    spent = app.page.evaluate("window.harness.spend('generate_goal')")
    assert spent["remaining_balance"] == 17
    expect(app.page.locator(".notice")).to_have_text("Used 3 tokens for generate_goal · 17 left")
    expect(app.card("goal_generation").locator(".count")).to_have_text("17 / 20")
    assert balances(db, pro_org)["goal_generation"] == (17, 20)
    app.shot("react")

    starter = make_user(starter_org, "owner")
    prompt = open_dashboard(
        starter, organization_id=starter_org, plan="starter", react=True, wait="upgrade"
    )
    expect(prompt.page.locator("#react-state")).to_have_text("upgrade")
    prompt.page.get_by_role("button", name="See plans and upgrade").click()
    expect(prompt.page.locator("#react-upgrades")).to_have_text("1")


# --------------------------------------------------------------------------- states


def test_loading_state_until_the_first_answer(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID
) -> None:
    """The first request is held (not answered for it) until the loading state was seen."""
    held: list[Route] = []
    released = False

    def hold(route: Route) -> None:
        if released:
            route.continue_()
        else:
            held.append(route)

    dashboard = open_dashboard(
        make_user(pro_org, "member"),
        organization_id=pro_org,
        before=lambda page: page.route("**/rest/v1/**", hold),
    )
    dashboard.wait_for("loading")
    status = dashboard.page.get_by_role("status").filter(has_text="Loading AI tokens")
    expect(status).to_have_attribute("aria-busy", "true")
    dashboard.shot("loading")
    assert held, "no request reached the network"
    released = True
    for route in held:
        route.continue_()
    dashboard.wait_for("ready")


def test_signed_out(open_dashboard: OpenDashboard, pro_org: uuid.UUID) -> None:
    dashboard = open_dashboard(None, organization_id=pro_org, wait="signed-out")
    expect(dashboard.element).to_contain_text("Sign in to see your AI tokens")
    dashboard.shot("signed-out")


def test_an_expired_jwt_is_signed_out(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID
) -> None:
    """PostgREST refuses an expired access token (401): the person is asked to sign in."""
    user = make_user(pro_org, "member")
    user._token = user.token(expires_in=-60)
    dashboard = open_dashboard(user, organization_id=pro_org)
    dashboard.expected_errors.append(
        re.compile(r"Failed to load resource: .* 401 \(Unauthorized\)")
    )
    dashboard.wait_for("signed-out")
    expect(dashboard.element).to_contain_text("Your session has ended. Sign in again.")
    dashboard.shot("expired")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_network_error_with_a_retry_reachable_by_keyboard(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID
) -> None:
    unreachable = f"http://127.0.0.1:{_closed_port()}"
    dashboard = open_dashboard(
        make_user(pro_org, "member"), organization_id=pro_org, supabase_url=unreachable
    )
    dashboard.expected_errors.append(re.compile(r"net::ERR_CONNECTION_REFUSED|Failed to fetch"))
    dashboard.wait_for("network-error")
    alert = dashboard.page.get_by_role("alert")
    expect(alert).to_contain_text("Cannot reach the token service")
    dashboard.shot("network-error")
    dashboard.page.keyboard.press("Tab")
    focused = dashboard.element.evaluate("element => element.shadowRoot.activeElement?.textContent")
    assert focused == "Try again"
    requests: list[str] = []
    dashboard.page.on("request", lambda request: requests.append(request.url))
    dashboard.page.keyboard.press("Enter")
    dashboard.wait_for("network-error")
    expect(dashboard.page.get_by_role("button", name="Try again")).to_be_visible()
    assert any(url.startswith(unreachable) for url in requests)


def test_empty_usage(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID
) -> None:
    dashboard = open_dashboard(make_user(pro_org, "owner"), organization_id=pro_org, wait="ready")
    expect(dashboard.page.locator(".usage .empty")).to_have_text(
        "No AI usage in the last 30 days yet. Tokens appear here once an AI feature is used."
    )
    expect(dashboard.page.locator("section.alerts")).to_contain_text("No alerts.")
    dashboard.shot("empty-usage")


# -------------------------------------------------------------------- accessibility


def _contrast_script() -> str:
    return """element => {
        const channel = c => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        };
        const parse = s => s.match(/[\\d.]+/g).map(Number);
        const luminance = ([r, g, b]) =>
            0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
        const background = node => {
            for (let n = node; n; n = n.parentElement || n.getRootNode().host) {
                const [r, g, b, a = 1] = parse(getComputedStyle(n).backgroundColor);
                if (a > 0.99) return [r, g, b];
            }
            return [255, 255, 255];
        };
        const fg = luminance(parse(getComputedStyle(element).color));
        const bg = luminance(background(element));
        return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    }"""


def test_text_contrast_and_labelled_progressbars(
    open_dashboard: OpenDashboard, make_user: UserFactory, pro_org: uuid.UUID
) -> None:
    owner = make_user(pro_org, "owner")
    for _ in range(6):
        owner.client().deduct_tokens("generate_goal")  # a warning to measure too
    dashboard = open_dashboard(owner, organization_id=pro_org, wait="ready")
    bars = dashboard.page.get_by_role("progressbar")
    expect(bars).to_have_count(TOKEN_TYPES_OF_PRO)
    for index in range(TOKEN_TYPES_OF_PRO):
        bar = bars.nth(index)
        for attribute in ("aria-valuemin", "aria-valuemax", "aria-valuenow", "aria-valuetext"):
            assert bar.get_attribute(attribute) is not None
        assert bar.get_attribute("aria-labelledby")
    selectors = [
        "h2",
        ".org",
        ".totals",
        ".warning p",
        ".facts dt",
        ".facts dd",
        "caption",
        "figcaption",
        ".alerts time",
        "th",
        "td.tokens",
    ]
    for selector in selectors:
        target = dashboard.page.locator(f"token-dashboard {selector}").first
        ratio = target.evaluate(_contrast_script())
        assert ratio >= 4.5, f"{selector}: contrast {ratio:.2f}"


# ---------------------------------------------------------------------- the demo page


def test_the_demo_page_signs_in_as_the_seeded_users(
    browser: Browser, dashboard_url: str, stack_env: StackEnv, request: pytest.FixtureRequest
) -> None:
    """`tokens demo` writes the sessions; `?as=bob` shows Acme as Bob, `?as=nobody` signs out."""
    from tokens_client._demo import write_dashboard_sessions

    stack = Stack()
    if stack.status().api_url != stack_env.url:
        pytest.skip("the demo's sessions belong to the local stack")
    assert write_dashboard_sessions(stack, stack.status()) == dashboard_url
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(dashboard_url + "?as=bob")
        expect(page.locator("token-dashboard")).to_have_attribute("state", "ready")
        expect(page.locator("token-dashboard .org-name")).to_have_text("Acme")
        expect(page.get_by_role("heading", name="Your usage")).to_have_count(
            1 if page.locator("token-dashboard table.by-member").count() else 0
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{request.node.name}-bob.png", full_page=True)
        page.goto(dashboard_url + "?as=nobody")
        expect(page.locator("token-dashboard")).to_have_attribute("state", "signed-out")
    finally:
        context.close()
    assert errors == []
