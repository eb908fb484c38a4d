"""Deployment settings: .streamlit/config.toml for a public server, and the cap on stored models."""

from __future__ import annotations

import tomllib

import pytest

from core import config

CONFIG_TOML = config.ROOT / ".streamlit" / "config.toml"


@pytest.fixture(scope="module")
def settings() -> dict:
    with open(CONFIG_TOML, "rb") as fh:
        return tomllib.load(fh)


def test_config_has_only_streamlit_sections(settings):
    # App constants live in core/config.py; config.toml holds Streamlit's own settings only.
    assert set(settings) <= {"server", "browser", "client", "runner", "theme", "global", "logger", "magic"}


def test_xsrf_and_cors_protection_stay_on(settings):
    server = settings.get("server", {})
    assert server.get("enableXsrfProtection", True) is True  # Streamlit's default is on; never switched off
    assert server.get("enableCORS", True) is True
    assert "sslCertFile" not in server and "sslKeyFile" not in server  # TLS ends at the proxy
    assert "cookieSecret" not in server  # secrets come from the environment, not the repository


def test_usage_statistics_are_off(settings):
    assert settings["browser"]["gatherUsageStats"] is False


def test_visitors_see_no_error_details_or_developer_toolbar(settings):
    client = settings["client"]
    assert client["showErrorDetails"] == "none"  # a traceback never reaches the browser
    assert client["toolbarMode"] in ("viewer", "minimal")


def test_upload_limit_admits_phone_photos_but_is_bounded(settings):
    server = settings["server"]
    assert 20 <= server["maxUploadSize"] <= 50  # MB: a ~20 MB phone photo fits, a 200 MB file does not
    # Canvas drawings arrive as websocket messages; the default 200 MB would admit huge payloads.
    assert server.get("maxMessageSize", 200) <= 50


def test_server_does_not_watch_or_serve_files(settings):
    server = settings["server"]
    assert server.get("headless") is True
    assert server.get("enableStaticServing", False) is False
    assert server.get("fileWatcherType") == "none" and server.get("runOnSave", False) is False


def test_streamlit_reads_the_same_values(monkeypatch):
    """Streamlit's own config loader agrees with the file (option names are spelt right)."""
    from streamlit import config as st_config

    monkeypatch.chdir(config.ROOT)  # Streamlit reads ./.streamlit/config.toml, as `streamlit run` from the root

    st_config.get_config_options(force_reparse=True, options_from_flags={})
    try:
        assert st_config.get_option("server.enableXsrfProtection") is True
        assert st_config.get_option("browser.gatherUsageStats") is False
        assert st_config.get_option("client.showErrorDetails") == "none"
        assert st_config.get_option("client.toolbarMode") in ("viewer", "minimal")
        assert 20 <= st_config.get_option("server.maxUploadSize") <= 50
    finally:
        st_config.get_config_options(force_reparse=True, options_from_flags={})


# --- the cap on user-trained models -----------------------------------------------------------------
# test_store.py covers the core rule (cap 2: the two newest user models and the default survive).


def test_cap_default_and_environment_parsing(monkeypatch):
    monkeypatch.delenv(config.MAX_USER_MODELS_ENV, raising=False)
    assert config.max_user_models() == config.MAX_USER_MODELS_DEFAULT == 20
    for raw, expected in (("5", 5), ("0", 1), ("-3", 1), ("lots", 20), ("", 20)):
        monkeypatch.setenv(config.MAX_USER_MODELS_ENV, raw)
        assert config.max_user_models() == expected, raw


def test_cap_never_removes_the_active_or_shipped_model(tmp_path, monkeypatch, tiny_served_files):
    from core.learning.model import ModelSpec, build_model
    from core.learning.persist import save_model
    from core.storage.info import ModelInfo
    from core.storage.store import ModelStore

    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    monkeypatch.setenv(config.MAX_USER_MODELS_ENV, "1")
    store = ModelStore(tmp_path / "models")
    tiny = ModelSpec(family="mlp", hidden=(4,), filters=(), dropout=0.0, batch_norm=False)
    model = build_model(tiny, seed=0)

    def save(name: str, month: int, **meta) -> None:
        save_model(store, model, ModelInfo(family="mlp", created=f"2026-{month:02d}-01T00:00:00+00:00", **meta),
                   name=name, files=tiny_served_files)

    save("shipped-old", 1, shipped=True)  # marked shipped: never counted
    save("oldest", 2)
    store.set_active("oldest")  # the server's default: kept although it is the oldest
    save("middle", 3)
    save("newest", 4)
    names = store.list().names()
    assert names == ["newest", "oldest", "shipped-old"], names
    assert store.active_name() == "oldest"
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("raw, expected", [(None, 5), ("", 5), ("0", 0), ("60", 60), ("-5", 0), ("99999", 5000),
                                           ("shipped", None), ("off", None)])
def test_canvas_send_delay(raw, expected, monkeypatch):
    if raw is None:
        monkeypatch.delenv(config.CANVAS_SEND_MS_ENV, raising=False)
    else:
        monkeypatch.setenv(config.CANVAS_SEND_MS_ENV, raw)
    assert config.canvas_send_ms() == expected
