"""Documentation stays true: the README's two commands are the ones CI runs, every
command and setting is documented, and the systemd unit has what the README promises."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quick)


def test_readme_quick_start_has_exactly_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "aggregator demo" in cmds[0] and "pip install -e ." in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_commands()[1] in ci


def test_systemd_unit_has_the_promised_settings():
    """What README.md and docs/systemd.md tell operators about the unit (the install steps
    depend on the paths and the user); tests/test_deploy.py checks the rest with systemd."""
    unit = (ROOT / "deploy" / "aggregator.service").read_text(encoding="utf-8").splitlines()
    for line in ("Type=notify", "ExecStart=/opt/aggregator/venv/bin/aggregator run --serve",
                 "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "StateDirectory=aggregator",
                 "ConfigurationDirectory=aggregator", "Environment=AGGREGATOR_CONFIG=/etc/aggregator/config.toml",
                 "User=aggregator", "ProtectSystem=strict", "NoNewPrivileges=yes", "UMask=0022"):
        assert line in unit, line
    assert any(line.startswith("WatchdogSec=") for line in unit)


def test_changelog_and_design_notes_exist():
    assert "## " in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(r"^## 20\d\d-\d\d-\d\d", (ROOT / "docs" / "dev.md").read_text(encoding="utf-8"), re.M)
