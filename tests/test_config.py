"""config.toml: every key validated, errors name the key and the file, edits keep layout."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.config import (
    SETTINGS,
    add_source_to_file,
    format_interval,
    load_config,
    parse_interval,
    remove_source_from_file,
)
from aggregator.errors import ConfigError
from tests.conftest import ROOT

GOOD_SOURCE = '[[sources]]\nname = "a"\nurl = "https://a.example/feed"\ncategory = "c"\n'


def _load(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return load_config(p)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ("concurrency = \"8\"\n", "'concurrency' must be an integer"),
        ("concurrency = true\n", "'concurrency' must be an integer"),
        ("allow_private_networks = 1\n", "'allow_private_networks' must be true or false"),
        ("default_interval = \"15 minutes\"\n", "'default_interval'"),
        ("default_interval = \"1s\"\n", "shorter than"),
        ("items_per_feed = 0\n", "'items_per_feed' must be at least 1"),
        ("base_url = \"ftp://x\"\n", "'base_url' must be an http(s) URL"),
        (GOOD_SOURCE + "interval = \"soon\"\n", "sources[0] (a).interval"),
        (GOOD_SOURCE + "colour = \"red\"\n", "sources[0] (a): unknown key 'colour'"),
        (GOOD_SOURCE + GOOD_SOURCE, "duplicate source name 'a'"),
        (GOOD_SOURCE + GOOD_SOURCE.replace('"a"', '"b"'), "duplicate source URL"),
        ('[[sources]]\nname = "a"\nurl = "https://x/"\n', "missing required key 'category'"),
        ('[[sources]]\nname = "a"\nurl = "file:///etc/passwd"\ncategory = "c"\n', "url must be an http(s) URL"),
        ('[[sources]]\nname = 3\nurl = "https://x/"\ncategory = "c"\n', "sources[0].name must be a string"),
        ("sources = 3\n", "'sources' must be an array of tables"),
        ("data_dir = \n", "invalid TOML"),
    ],
)
def test_config_errors_name_the_key_and_the_file(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert needle in str(err.value)
    assert str(tmp_path / "config.toml") in str(err.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_defaults_and_relative_paths(tmp_path):
    cfg = _load(tmp_path, GOOD_SOURCE)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.output_dir == tmp_path / "feeds"
    assert cfg.posts_dir == tmp_path / "feeds" / "posts"
    assert cfg.allow_private_networks is False
    assert cfg.sources[0].interval == parse_interval("15m") == 900
    assert cfg.sources[0].channel is None
    assert cfg.base_url.endswith("/")


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("90", 90), (" 2H ", 7200)])
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15 minutes", "1x", "-5m", "1.5h", "m15"])
def test_parse_interval_rejects(text):
    with pytest.raises(ValueError):
        parse_interval(text)


@given(st.integers(min_value=10, max_value=10**7))
def test_interval_round_trip(seconds):
    assert parse_interval(format_interval(seconds)) == seconds


def test_add_and_remove_source_keep_comments_and_layout(tmp_path):
    original = (
        "# my aggregator\n"
        'base_url = "https://feeds.example.org/"  # where nginx serves feeds/\n'
        "\n"
        "# finance\n" + GOOD_SOURCE
    )
    p = tmp_path / "config.toml"
    p.write_text(original, encoding="utf-8")
    add_source_to_file(p, {"name": "掘金", "url": "https://juejin.example/rss", "category": "编程", "channel": "", "interval": "30m"})
    text = p.read_text(encoding="utf-8")
    assert text.startswith(original)  # every existing byte kept
    cfg = load_config(p)
    assert [s.name for s in cfg.sources] == ["a", "掘金"]
    assert cfg.sources[1].interval == 1800 and cfg.sources[1].channel is None
    remove_source_from_file(p, "a")
    text = p.read_text(encoding="utf-8")
    assert "# my aggregator" in text and "# where nginx serves feeds/" in text
    assert [s.name for s in load_config(p).sources] == ["掘金"]


def test_add_source_refuses_to_write_an_invalid_config(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text(GOOD_SOURCE, encoding="utf-8")
    with pytest.raises(ConfigError, match="duplicate source name"):
        add_source_to_file(p, {"name": "a", "url": "https://other.example/", "category": "c"})
    assert p.read_text(encoding="utf-8") == GOOD_SOURCE


def test_shipped_config_documents_every_setting_and_loads():
    shipped = ROOT / "config.toml"
    text = shipped.read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert f"{setting.name} =" in text or f"[{setting.name}." in text, f"config.toml does not document {setting.name}"
    cfg = load_config(shipped)
    names = {s.name for s in cfg.sources}
    assert {"财联社", "开源中国", "掘金"} <= names
    # the documented defaults are the real defaults
    data = tomllib.loads(text)
    for setting in SETTINGS:
        if setting.name in data and setting.name not in ("data_dir", "output_dir", "base_url"):
            assert data[setting.name] == setting.default, setting.name


def test_readme_documents_every_setting_and_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    from aggregator.cli import cli

    for setting in SETTINGS:
        assert f"`{setting.name}`" in readme, f"README does not document {setting.name}"
    for name in cli.commands:
        assert f"aggregator {name}" in readme, f"README does not mention the {name} command"
