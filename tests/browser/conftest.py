"""Browser-test fixtures: one real app server per session, Debian's Chromium, a fresh page per test.

The server runs ``streamlit run Home.py`` on a free port with ``DIGITS_MODELS_DIR`` on a temporary
copy of the repository's ``models/`` (trainings in tests never touch the real store) and
``DIGITS_DATA_DIR`` on a temporary folder. Its log and every screenshot land in ``tests/artifacts/``;
with ``UPDATE_SCREENSHOTS=1`` the page screenshots are also written to ``tests/screenshots/`` (the
README's pictures).

The session server trains the way ``streamlit run Home.py`` does out of the box: on a local Dask
cluster it starts itself. ``cluster_app_server`` is a second server whose runs go to the session's
test cluster instead (``tests/conftest.py``'s ``dask_cluster``: a real ``dask scheduler`` and
``dask worker``, separate processes), through ``DIGITS_DASK_SCHEDULER``.

Other browser test files reuse these fixtures as they are (``app_server``, ``app_url``,
``browser``, ``page``, ``models_dir``, ``screenshot``, ``cluster_app_server``, ``visitors``);
scripts outside pytest use ``tests.browser.server`` (``start_server``, ``launch_chromium``, ...).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m`: make `tests.browser.server` importable
    sys.path.insert(0, str(ROOT))

from tests.browser.server import (  # noqa: E402
    Server,
    app_env,
    free_port,
    full_page_screenshot,
    launch_chromium,
    start_server,
)

ARTIFACTS = ROOT / "tests" / "artifacts"
README_SCREENSHOTS = ROOT / "tests" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}
SERVER_START_TIMEOUT_S = 90
DEFAULT_TIMEOUT_MS = 30_000
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items) -> None:
    """Every test in tests/browser/ is a browser test."""
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Remember each phase's outcome on the item, so the page fixture can screenshot failures.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def app_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-app")


@contextmanager
def serving(env: dict, log_name: str) -> Iterator[Server]:
    """``streamlit run Home.py`` with ``env`` on a free port, its log in tests/artifacts/``log_name``;
    stopped when the block ends."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = start_server(free_port(), env, log_path=ARTIFACTS / log_name, timeout=SERVER_START_TIMEOUT_S)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def app_server(app_workdir) -> Server:
    """The app, served for the whole browser-test session on a private copy of the model store."""
    env = app_env(ROOT / "models", app_workdir)
    with serving(env, "streamlit-server.log") as server:
        yield server


@pytest.fixture(scope="session")
def cluster_app_server(dask_cluster, tmp_path_factory) -> Server:
    """An app server whose runs train on the session's test Dask cluster, on its own copy of the
    model store (``server.env["DIGITS_MODELS_DIR"]``)."""
    env = app_env(ROOT / "models", tmp_path_factory.mktemp("browser-cluster-app"))
    env["DIGITS_DASK_SCHEDULER"] = dask_cluster.address
    with serving(env, "streamlit-cluster-server.log") as server:
        yield server


@pytest.fixture(scope="session")
def app_url(app_server) -> str:
    return app_server.url


@pytest.fixture(scope="session")
def models_dir(app_server) -> Path:
    """The server's (temporary) model store."""
    return Path(app_server.env["DIGITS_MODELS_DIR"])


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, for the whole session."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


def keep_if_failed(request, pg, name: str) -> None:
    """On a failing test, a screenshot of ``pg`` in tests/artifacts/failed-<name>.png."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            full_page_screenshot(pg, ARTIFACTS / f"failed-{name}.png")
        except Exception as exc:  # the page may be gone; the failure itself matters more
            print(f"no failure screenshot of {name}: {exc}", file=sys.stderr)


@pytest.fixture
def page(browser, app_server, request):
    """A page in a fresh browser context (a new Streamlit session), 1280x900.

    On a failing test, a screenshot of the page is kept in tests/artifacts/failed-<test>.png.
    """
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    pg = context.new_page()
    try:
        yield pg
    finally:
        keep_if_failed(request, pg, request.node.name)
        context.close()


@pytest.fixture
def visitors(browser, request):
    """``open_visitor(name, viewport=VIEWPORT, color_scheme="light", **options)``: a page in a new
    browser context (another visitor, with the system's light or dark colour scheme and Playwright's
    other context options, such as a phone's ``has_touch``,
    or the same one in another browser when it opens their address with its ``?owner=`` token).
    All are closed after the test; on a failing test, each one's page is kept in
    tests/artifacts/failed-<test>-<name>.png."""
    opened: list[tuple[str, object, object]] = []

    def open_visitor(name: str, viewport: dict | None = None, color_scheme: str = "light", **options):
        context = browser.new_context(viewport=viewport or VIEWPORT, color_scheme=color_scheme, **options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        pg = context.new_page()
        opened.append((name, context, pg))
        return pg

    try:
        yield open_visitor
    finally:
        for name, context, pg in opened:
            keep_if_failed(request, pg, f"{request.node.name}-{name}")
            context.close()


@pytest.fixture
def screenshot():
    """``screenshot(page, name, element=None)``: the whole page (or the screen scrolled to one element)
    as tests/artifacts/<name>.png, and as
    tests/screenshots/<name>.png too when UPDATE_SCREENSHOTS=1."""

    def take(pg, name: str, element=None) -> Path:
        if element is None:
            path = full_page_screenshot(pg, ARTIFACTS / f"{name}.png")
        else:  # a tall screen scrolled to show this element (a locator) at its bottom: what the picture is about
            path = ARTIFACTS / f"{name}.png"
            size = pg.viewport_size
            pg.set_viewport_size({"width": size["width"], "height": 2900})
            try:
                element.evaluate("e => e.scrollIntoView({block: 'center'})")
                pg.wait_for_timeout(500)
                pg.screenshot(path=str(path))
            finally:
                pg.set_viewport_size(size)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            (README_SCREENSHOTS / f"{name}.png").write_bytes(path.read_bytes())
        return path

    return take
