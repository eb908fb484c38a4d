"""Training runs in the app: the server's `core.learning.runs.RunBoard`, the visitor's owner token, and the
panels that show a run (live progress and curves, its result, the queue).

Runs train on Dask workers; this server only submits them and reads their progress, so it never
imports TensorFlow.
"""

from __future__ import annotations

import re
import secrets

import numpy as np
import streamlit as st

from core.report.charts import history_figure
from core.learning.architecture import describe as describe_stack
from core.learning.runs import NotOwner, RunBoard, RunError, RunSnapshot
from ui.messages import show_table
from ui.models import use_model_button

OWNER_PARAM = "owner"  # the URL's query parameter that carries the visitor's owner token
OWNER_KEY = "run_owner"  # ... and its session-state key
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
LIVE_REFRESH_S = 1.0  # the live panel's redraw period
LIVE_MAX_POINTS = 300  # per-batch points drawn per curve
MAX_ACTIVE_PER_OWNER = 3  # runs one visitor may have queued or running at once
FINETUNE = "finetune"


@st.cache_resource(show_spinner="Starting the training workers…")
def board() -> RunBoard:
    """The server's run board over its Dask cluster (`core.learning.runs.connect`), shared by every session.

    Raises:
        RunError: the cluster cannot be started or reached (not cached: the next visit tries again).
    """
    return RunBoard.connect()


def owner_token() -> str:
    """This visitor's owner token: from the URL (``?owner=``) after a reload or in another tab,
    else from the session, else a new one; it is kept in both."""
    token = st.query_params.get(OWNER_PARAM)
    if not (isinstance(token, str) and _TOKEN_RE.match(token)):
        token = st.session_state.get(OWNER_KEY) or secrets.token_urlsafe(18)
    st.session_state[OWNER_KEY] = token
    if st.query_params.get(OWNER_PARAM) != token:
        st.query_params[OWNER_PARAM] = token
    return token


def duration(seconds: float | None) -> str:
    """``"1:05"`` or ``"42 s"``; ``"–"`` when unknown."""
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def describe(snap: RunSnapshot) -> str:
    """The run's settings in one line."""
    cfg, spec = snap.config, snap.config.spec
    if snap.kind == FINETUNE:
        n = snap.info.get("corrections", 0)
        return (f"Fine-tuning **{snap.info.get('base_model', '?')}** on {n:,} correction{'s' if n != 1 else ''} "
                f"mixed with {cfg.train_size or 0:,} MNIST images · {cfg.epochs} epochs · batch {cfg.batch_size}")
    if spec.family == "custom":
        arch = f"Custom: {describe_stack(spec.layers)}"
    elif spec.family == "cnn":
        arch = f"CNN, conv {'-'.join(map(str, spec.filters))}, dense {'-'.join(map(str, spec.hidden))}"
    else:
        arch = f"MLP, hidden {'-'.join(map(str, spec.hidden))}"
    size = cfg.train_size or 60000
    return (f"{arch} · {size:,} images ({cfg.val_fraction:.0%} for validation) · {cfg.epochs} epoch"
            f"{'s' if cfg.epochs != 1 else ''} · batch {cfg.batch_size} · learning rate {cfg.learning_rate:g}"
            + (" · augmented" if cfg.augment else ""))


def control(action: str, run_id: str, owner: str) -> None:
    """Stop or cancel a run (a button's callback); a refusal is shown as a toast."""
    try:
        (board().stop if action == "stop" else board().cancel)(run_id, owner)
    except (NotOwner, RunError) as exc:
        st.toast(str(exc), icon=":material/block:")


def _last_val(snap: RunSnapshot) -> float | None:
    return next((e["val_accuracy"] for e in reversed(snap.epochs) if e["val_accuracy"] is not None), None)


def curves(snap: RunSnapshot, key: str) -> None:
    if snap.batches:
        st.plotly_chart(history_figure(list(snap.batches), list(snap.epochs), max_points=LIVE_MAX_POINTS),
                        width="stretch", key=key)
        st.caption("Training values are running means over the current epoch; validation is measured "
                   "at the end of each epoch." + (" Fine-tuning holds no images out for validation."
                                                  if snap.kind == FINETUNE else ""))


def _progress(snap: RunSnapshot) -> None:
    p = snap.progress
    if snap.state == "queued":
        where = "next in the queue" if snap.position == 1 else f"number {snap.position} in the queue"
        st.progress(0.0, text=f"Waiting for a worker: {where} · starts in about {duration(snap.wait_s)}")
    elif p is None or snap.phase:
        st.progress(0.0 if p is None else 1.0, text=snap.phase or "Starting on a worker…")
    elif p["kind"] == "epoch" and p["epoch"] == p["epochs"]:
        st.progress(1.0, text=f"Epoch {p['epochs']}/{p['epochs']} done · measuring accuracy on the 10,000 test images…")
    else:
        done = ((p["epoch"] - 1) * p["batches"] + p["batch"]) / max(1, p["epochs"] * p["batches"])
        st.progress(min(1.0, done), text=f"Epoch {p['epoch']}/{p['epochs']} · batch {p['batch']}/{p['batches']} · "
                                         f"{duration(p['elapsed'])} elapsed · about {duration(p['eta'])} left")


def active_panel(snap: RunSnapshot, owner: str, key: str) -> None:
    """A queued or running run: progress, the owner's Stop and Cancel, metrics and live curves."""
    what = "Fine-tuning" if snap.kind == FINETUNE else "Training"
    st.subheader(f"{what} queued" if snap.state == "queued" else f"{what} in progress")
    st.caption(f"Started by {'you' if snap.owned_by(owner) else 'another visitor'} · {describe(snap)}")
    _progress(snap)
    if snap.state in ("stopping", "cancelling"):
        st.info("Stopping after the current batch; the model so far will be saved…" if snap.state == "stopping"
                else "Cancelling after the current batch; nothing will be saved…", icon=":material/hourglass_top:")
    elif snap.owned_by(owner):
        stop_col, cancel_col, _ = st.columns([3, 2, 2])
        stop_col.button("Stop and save", key=f"{key}_stop", on_click=control, args=("stop", snap.id, owner),
                        icon=":material/stop_circle:", disabled=snap.state == "queued",
                        help="End after the current batch and save the model as it is then.")
        cancel_col.button("Cancel", key=f"{key}_cancel", on_click=control, args=("cancel", snap.id, owner),
                          icon=":material/cancel:", help="End now and save nothing.")
    else:
        st.caption("Only the visitor who started this run can stop or cancel it.")
    if snap.progress is not None:
        p = snap.progress
        m1, m2, m3 = st.columns(3)
        m1.metric("Training loss", f"{p['loss']:.4f}")
        m2.metric("Training accuracy", f"{p['accuracy']:.2%}")
        val = _last_val(snap)
        m3.metric("Validation accuracy", f"{val:.2%}" if val is not None else "–",
                  help="Measured on the held-out images at the end of each epoch.")
    curves(snap, f"{key}_curves")


def ended_panel(snap: RunSnapshot, owner: str, key: str) -> None:
    """A run that ended: its result (or why it has none) and its curves."""
    what = "Fine-tuning" if snap.kind == FINETUNE else "Training"
    st.subheader(f"Last {what.lower()} run")
    st.caption(f"Started by {'you' if snap.owned_by(owner) else 'another visitor'} · {describe(snap)}")
    if snap.state in ("finished", "stopped") and snap.model_name:
        how = "finished" if snap.state == "finished" else "was stopped; the model as it was then"
        st.success(f"{what} {how}. It was saved as **{snap.model_name}**.", icon=":material/check_circle:")
        m1, m2, m3 = st.columns(3)
        acc = snap.test_accuracy
        m1.metric("Test accuracy", f"{acc:.2%}" if acc is not None else "–",
                  help="Share of the 10,000 MNIST test images read correctly.")
        if snap.kind == FINETUNE:
            before, after = snap.info.get("corrections_accuracy_before"), snap.info.get("corrections_accuracy_after")
            m2.metric("Corrections read right, before", f"{before:.0%}" if before is not None else "–")
            m3.metric("Corrections read right, after", f"{after:.0%}" if after is not None else "–",
                      help="The corrections are what it was fine-tuned on: this shows they were learned, not how "
                           "well new drawings will be read.")
            if after is not None and after < 1.0:
                st.caption(f"{1.0 - after:.0%} of the corrections are still read the old way. They were mixed "
                           "with thousands of MNIST images so that the model keeps what it knew, and a correction "
                           "whose label disagrees with its drawing, or a drawing unlike any digit, is outweighed "
                           "by them. Check their labels on the Corrections page.")
        else:
            val = _last_val(snap)
            m2.metric("Validation accuracy", f"{val:.2%}" if val is not None else "–")
            m3.metric("Training time", duration(snap.train_seconds))
        use_model_button(snap.model_name, f"{key}_use_model")
    elif snap.state in ("cancelled", "stopped"):
        st.warning(f"{what} was cancelled. No model was saved.", icon=":material/cancel:")
    else:
        st.error(f"{what} failed: {snap.error}", icon=":material/error:")
    curves(snap, f"{key}_curves")


def _queue_rows(runs: list[RunSnapshot], owner: str) -> list[dict]:
    """Rows for the cluster's queue: every active run, whoever started it."""
    return [{"who": "you" if r.owned_by(owner) else "another visitor",
             "what": "fine-tuning" if r.kind == FINETUNE else f"{r.config.spec.family.upper()} training",
             "state": r.state if r.state != "queued" else f"queued (#{r.position})",
             "epochs": r.config.epochs,
             "progress": (f"epoch {r.progress['epoch']}/{r.progress['epochs']}" if r.progress else ""),
             "starts or ends in": duration(r.wait_s if r.state == "queued" else (r.progress or {}).get("eta"))}
            for r in runs if r.active]


def focus(runs: list[RunSnapshot], owner: str, kind: str) -> RunSnapshot | None:
    """The run of ``kind`` a page shows: the visitor's newest active run, else their newest run, else
    the newest active run of anyone (watched without controls), one that trains rather than one
    still waiting in the queue (which has no curves to watch yet)."""
    mine = [r for r in runs if r.kind == kind and r.owned_by(owner)]
    others = [r for r in runs if r.kind == kind and r.active]
    return (next((r for r in mine if r.active), None) or (mine[0] if mine else None)
            or next((r for r in others if r.state != "queued"), None) or (others[0] if others else None))


def refuse_if_too_many(runs: list[RunSnapshot], owner: str) -> None:
    """Raises RunError when the visitor already has ``MAX_ACTIVE_PER_OWNER`` runs queued or running."""
    if sum(r.active and r.owned_by(owner) for r in runs) >= MAX_ACTIVE_PER_OWNER:
        raise RunError(f"You already have {MAX_ACTIVE_PER_OWNER} runs queued or running; start more when one ends.")


def show_run(kind: str, owner: str, key: str) -> RunSnapshot | None:
    """Show the visitor's run of ``kind`` (`focus`): live, redrawn every ``LIVE_REFRESH_S``, while it
    is active; its result once it has ended. The page is redrawn when another run comes into focus
    or this one ends. Returns the run shown (None when there is none yet).

    Raises:
        RunError: the training workers cannot be started or reached.
    """
    snap = focus(board().runs(), owner, kind)
    shown = (snap.id, snap.active) if snap else None

    @st.fragment(run_every=LIVE_REFRESH_S if snap is not None and snap.active else 2 * LIVE_REFRESH_S)
    def follow() -> None:
        now = focus(board().runs(), owner, kind)
        if ((now.id, now.active) if now else None) != shown:
            st.rerun()
        if now is not None and now.active:
            active_panel(now, owner, key)

    follow()
    if snap is not None and not snap.active:
        ended_panel(snap, owner, key)
    return snap


@st.fragment(run_every=2.0)
def queue_panel(owner: str) -> None:
    """Everyone's queued and running runs (position, progress, wait) and the runs that ended recently,
    redrawn every two seconds; ``owner``'s own are marked "you"."""
    all_runs = board().runs()
    active = _queue_rows(all_runs, owner)
    workers = board().workers
    st.caption(f"{workers} training worker{'s' if workers != 1 else ''}, one run each at a time; the others wait "
               "in order. Everyone's runs are listed; only the visitor who started a run can stop or cancel it.")
    if active:
        show_table(active, {"who": "Started by", "what": "Run", "state": "State", "epochs": "Epochs",
                            "progress": "Progress", "starts or ends in": "Starts / ends in"}, right=("epochs",))
    else:
        st.caption("The workers are free: a run starts as soon as it is submitted.")
    ended = [r for r in all_runs if not r.active and r.model_name]
    if ended:
        st.markdown("**Finished recently** (every model is in the store, with its curves, for everyone: "
                    "pick one in the sidebar)")
        show_table(
            [{"model": r.model_name, "who": "you" if r.owned_by(owner) else "another visitor",
              "accuracy": r.test_accuracy, "time": duration(r.train_seconds)} for r in ended],
            {"model": "Model", "who": "Started by", "accuracy": "Test accuracy", "time": "Training time"},
            formats={"accuracy": "{:.2%}"}, right=("accuracy", "time"))
