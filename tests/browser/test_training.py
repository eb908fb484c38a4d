"""The training queue in a real browser, with its runs on a real Dask cluster.

``cluster_app_server`` (conftest.py) is ``streamlit run Home.py`` with ``DIGITS_DASK_SCHEDULER``
pointing at the session's test cluster (``tests/conftest.py``'s ``dask_cluster``: a ``dask
scheduler`` and one ``dask worker``, separate processes on 127.0.0.1) and its own copy of the model
store. Visitors are browser contexts of Debian's Chromium:

- A starts a long CNN run and watches its live chart grow (the Plotly figure's data, read from the page);
- B sees A's run without its Stop and Cancel buttons, and queues a run of their own ("queued", #1);
- A reloads their address (``?owner=...``) and still has the run and its controls; the same address
  in a third, phone-sized context has them too;
- A stops the run (the model so far is saved); B's run then gets the worker, finishes and is saved.

Screenshots: tests/artifacts/train-queue-visitor-a.png, -visitor-b.png and -phone.png (also in
tests/screenshots/ with UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.browser.server import wait_idle

pytestmark = pytest.mark.browser

COLD_TIMEOUT_MS = 180_000  # the server's first /Train (MNIST, Plotly) on a loaded 2-core machine
STEP_TIMEOUT_MS = 60_000
RUN_END_TIMEOUT_MS = 180_000  # a stopped run's test, export and save; a quick run from start to end
PHONE = {"width": 412, "height": 915}
# A's run: the form's CNN on 60,000 images for 20 epochs, two minutes or more on 2 cores, long enough
# for every check below (which take about a minute on a loaded machine); A stops it at the end.
EPOCHS_A = 20
POLL_S = 1.5  # between two readings of the live chart
MAX_POLL_GAP_S = 2.5  # a reading counts only if it came at most this long after the previous one
GROWTHS = 3  # consecutive readings that must each show a newer step
MAX_POLLS = 20

# The live chart's training curve: how many points it draws and the step of its newest one. The curve
# is thinned to at most 300 points by a stride that grows with the run, so past 300 batches the count
# goes up and down between 150 and 300 while the newest step moves on: growth is read from the step.
CHART_JS = """() => {
  const gd = [...document.querySelectorAll('.st-key-train_curves .js-plotly-plot')]
    .find(e => e.getBoundingClientRect().width > 0);  // the one on screen (a redraw may leave a hidden one)
  if (!gd || !gd.data || !gd.data.length) return null;
  const x = Array.from(gd.data[0].x || []);
  return {points: x.length, last: x.length ? x[x.length - 1] : 0};
}"""


def main_area(page):
    return page.locator('[data-testid="stMain"]')


def heading(page, text: str):
    return main_area(page).get_by_role("heading", name=text, exact=True)


def alerts(page, kind: str) -> list[str]:
    return main_area(page).locator(f'[data-testid="stAlertContent{kind.capitalize()}"]').all_inner_texts()


def assert_no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "the page shows a traceback"
    assert alerts(page, "error") == [], f"the page shows an error: {alerts(page, 'error')}"


def button(page, key: str):
    """The button with widget key ``key`` (Streamlit draws a button with a help tooltip twice, the
    second copy hidden: this is the one on screen)."""
    return page.locator(f".st-key-{key} button:visible")


def no_button(page, key: str) -> bool:
    return page.locator(f".st-key-{key} button").count() == 0


def progress(page, text):
    """The run panel's progress bar, once its text has ``text`` (a string or a pattern)."""
    return main_area(page).locator('[data-testid="stProgress"]', has_text=text)


def owner_token(page) -> str:
    """The visitor's owner token, from the page's address (the Train page puts it there)."""
    page.wait_for_url(re.compile(r"[?&]owner=[A-Za-z0-9_-]{16,}"), timeout=STEP_TIMEOUT_MS)
    return re.search(r"[?&]owner=([A-Za-z0-9_-]+)", page.url)[1]


def open_train(page, url: str) -> None:
    page.goto(f"{url}/Train", timeout=COLD_TIMEOUT_MS)
    page.get_by_role("button", name="Start training").wait_for(timeout=COLD_TIMEOUT_MS)


def saved_name(page) -> str:
    """The model name in the run's success message ("... It was saved as NAME.")."""
    texts = [t for t in alerts(page, "success") if "saved as" in t]
    assert texts, f"no 'saved as' message: {alerts(page, 'success') + alerts(page, 'warning')}"
    match = re.search(r"saved as (\S+?)\.?$", texts[0].strip())
    assert match, f"no saved model name in {texts[0]!r}"
    return match[1]


def watch_chart(page) -> tuple[int, list[dict | None], list[float]]:
    """Read the live chart every POLL_S until GROWTHS readings in a row each showed a newer step than
    the reading before, at most MAX_POLL_GAP_S after it (at most MAX_POLLS readings).

    Returns:
        The longest such streak, the readings and the seconds between them.
    """
    readings: list[dict | None] = []
    gaps: list[float] = []
    streak = best = 0
    then = None
    for _ in range(MAX_POLLS):
        state, now = page.evaluate(CHART_JS), time.monotonic()
        if readings:
            before = readings[-1]
            gaps.append(round(now - then, 2))
            grew = bool(state and before and state["points"] and state["last"] > before["last"])
            streak = streak + 1 if grew and now - then <= MAX_POLL_GAP_S else 0
            best = max(best, streak)
        readings.append(state)
        then = now
        if best >= GROWTHS:
            break
        page.wait_for_timeout(POLL_S * 1000)
    return best, readings, gaps


@pytest.fixture
def no_run_left(dask_cluster):
    """After the test, every run still on the test cluster is cancelled (the test may have failed
    before its visitors ended them), and waited for: the next test gets a free worker."""
    yield
    from distributed import Client, Event

    from core.learning.tasks import channel_names

    def _digits_tasks(dask_scheduler) -> list[str]:  # on the scheduler (a local function: sent by value)
        """The keys of the runs the scheduler still has to run or is running: ``digits-<kind>-<run id>``."""
        return [str(key) for key, ts in dask_scheduler.tasks.items()
                if str(key).startswith("digits-") and ts.state in ("released", "waiting", "queued", "no-worker",
                                                                   "processing")]

    with Client(dask_cluster.address, timeout="10s") as client:
        for key in client.run_on_scheduler(_digits_tasks):
            Event(channel_names(key.rsplit("-", 1)[-1]).cancel, client=client).set()
        deadline = time.monotonic() + 120
        while client.run_on_scheduler(_digits_tasks) and time.monotonic() < deadline:
            time.sleep(0.5)


def test_two_visitors_share_the_training_queue(visitors, cluster_app_server, no_run_left, screenshot):
    from core.storage.store import ModelStore

    url = cluster_app_server.url
    store = ModelStore(Path(cluster_app_server.env["DIGITS_MODELS_DIR"]))
    models_before = set(store.list().names())
    log_start = len(cluster_app_server.log())

    # Visitor A starts a long CNN run: the form's defaults (CNN, 60,000 images) with more epochs.
    a = visitors("visitor-a")
    open_train(a, url)
    token = owner_token(a)
    wait_idle(a)
    epochs = a.locator(".st-key-train_epochs input")
    epochs.fill(str(EPOCHS_A))
    epochs.press("Tab")
    a.get_by_role("button", name="Start training").click()
    heading(a, "Training in progress").wait_for(timeout=STEP_TIMEOUT_MS)
    settings = main_area(a).get_by_text("Started by you · CNN, conv 32-64, dense 256 · 60,000 images")
    settings.wait_for(timeout=STEP_TIMEOUT_MS)
    assert f"{EPOCHS_A} epochs" in settings.inner_text(), settings.inner_text()

    # The live chart: new points at every reading, 1.5 s apart.
    a.locator(".st-key-train_curves .js-plotly-plot:visible").first.wait_for(timeout=STEP_TIMEOUT_MS)
    streak, readings, gaps = watch_chart(a)
    assert streak >= GROWTHS, f"the live chart did not grow at {GROWTHS} readings in a row: {readings}, gaps {gaps}"
    assert heading(a, "Training in progress").count() == 1, "A's run ended while it was watched: make it longer"
    progress(a, re.compile(rf"Epoch \d+/{EPOCHS_A} · batch \d+/\d+")).wait_for(timeout=STEP_TIMEOUT_MS)

    # Visitor B sees A's run, without its controls, and queues a run of their own.
    b = visitors("visitor-b")
    open_train(b, url)
    heading(b, "Training in progress").wait_for(timeout=COLD_TIMEOUT_MS)
    assert owner_token(b) != token
    main_area(b).get_by_text("Started by another visitor").wait_for(timeout=COLD_TIMEOUT_MS)
    main_area(b).get_by_text("Only the visitor who started this run can stop or cancel it.").wait_for(
        timeout=STEP_TIMEOUT_MS)  # drawn instead of the buttons
    assert no_button(b, "train_stop") and no_button(b, "train_cancel"), "B must not get A's Stop and Cancel"
    start_b = b.get_by_role("button", name="Start training")
    assert start_b.is_enabled(), "the form must stay open while another visitor's run trains"
    b.get_by_role("button", name="Quick run").click()
    heading(b, "Training queued").wait_for(timeout=STEP_TIMEOUT_MS)
    progress(b, "Waiting for a worker: next in the queue").wait_for(timeout=STEP_TIMEOUT_MS)
    button(b, "train_cancel").wait_for(timeout=STEP_TIMEOUT_MS)
    assert button(b, "train_stop").is_disabled() and button(b, "train_cancel").is_enabled()
    main_area(b).locator("td", has_text="queued (#1)").wait_for(timeout=STEP_TIMEOUT_MS)  # the queue table
    assert_no_exception(b)
    assert heading(a, "Training in progress").count() == 1, "A's run ended too early: make it longer"
    screenshot(b, "train-queue-visitor-b")

    # A's page, reloaded by its address, still has the run, with its controls, and sees B's run queued.
    a.reload(timeout=COLD_TIMEOUT_MS)
    heading(a, "Training in progress").wait_for(timeout=COLD_TIMEOUT_MS)
    assert owner_token(a) == token
    button(a, "train_stop").wait_for(timeout=COLD_TIMEOUT_MS)  # a new session: the whole page is drawn again
    assert button(a, "train_stop").is_enabled() and button(a, "train_cancel").is_enabled()
    main_area(a).get_by_text("Started by you").wait_for(timeout=STEP_TIMEOUT_MS)
    main_area(a).locator("td", has_text="queued (#1)").wait_for(timeout=STEP_TIMEOUT_MS)
    assert_no_exception(a)
    screenshot(a, "train-queue-visitor-a")

    # A's address in another browser (a phone): the same visitor, with the same controls.
    phone = visitors("phone", viewport=PHONE)
    phone.goto(f"{url}/Train?owner={token}", timeout=COLD_TIMEOUT_MS)
    heading(phone, "Training in progress").wait_for(timeout=COLD_TIMEOUT_MS)
    button(phone, "train_stop").wait_for(timeout=COLD_TIMEOUT_MS)
    button(phone, "train_cancel").wait_for(timeout=STEP_TIMEOUT_MS)
    main_area(phone).get_by_text("Started by you").wait_for(timeout=STEP_TIMEOUT_MS)
    assert heading(a, "Training in progress").count() == 1, "A's run ended too early: make it longer"
    assert_no_exception(phone)
    screenshot(phone, "train-queue-phone")

    # A stops the run: the model as it was then is saved.
    button(a, "train_stop").click()
    heading(a, "Last training run").wait_for(timeout=RUN_END_TIMEOUT_MS)
    assert any("Training was stopped; the model as it was then." in t for t in alerts(a, "success")), \
        alerts(a, "success") + alerts(a, "warning")
    stopped = saved_name(a)
    assert stopped.startswith("cnn-") and stopped in store.list().names(), (stopped, store.list().names())

    # B's queued run gets the worker, finishes, and its model is in the store.
    heading(b, "Last training run").wait_for(timeout=RUN_END_TIMEOUT_MS)
    assert any("Training finished." in t for t in alerts(b, "success")), alerts(b, "success")
    finished = saved_name(b)
    assert finished != stopped and finished in store.list().names(), (finished, store.list().names())
    assert set(store.list().names()) - models_before == {stopped, finished}
    assert_no_exception(a)
    assert_no_exception(b)
    log = cluster_app_server.log()[log_start:]
    assert "Traceback (most recent call last)" not in log, log[-3000:]
