"""The daemon as systemd runs it: a real ``aggregator run`` subprocess with a
``NOTIFY_SOCKET`` this test owns, SIGHUP reloads, one daemon per database, CLI commands
beside it, catch-up after failed writes, ``rebuild``, ``status``, log formats."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.daemon import DaemonLock, running_pid
from aggregator.notify import Notifier
from aggregator.pipeline import Pipeline
from tests.conftest import write_config
from tests.helpers import Systemd, numbered_feed

ROOT = Path(__file__).resolve().parents[1]
BASE = "https://feeds.example.org/"

feed = numbered_feed


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key in ("AGGREGATOR_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        e.pop(key, None)
    return e


def cli(config: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), *args], capture_output=True,
                          text=True, env=env(), timeout=120, stdin=subprocess.DEVNULL)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc




def start_daemon(config: Path, log: Path, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(config), "-v", "run"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True, env={**env(), **extra_env},
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=90)


def wait_until(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def hits(server, path: str) -> int:
    return sum(1 for r in server.requests if r.path == path)


@pytest.fixture
def daemon_setup(tmp_path, server):
    server.add("/a.xml", feed("a", 2))
    server.add("/b.xml", feed("b", 1))
    config = write_config(tmp_path / "config.toml", [
        {"name": "A", "url": server.url("/a.xml"), "category": "news", "interval": "10m"},
    ], base_url=BASE)
    return tmp_path, config


def test_systemd_notifications_reload_and_clean_stop(daemon_setup, server):
    tmp_path, config = daemon_setup
    systemd = Systemd(tmp_path)
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log, NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="1000000")
    try:
        ready = systemd.wait_for("READY", "1")
        assert ready["MAINPID"] == str(proc.pid) and "1 sources" in ready["STATUS"]
        systemd.wait_for("WATCHDOG", "1")
        # the first poll of A, then a one-line STATUS summary with its articles
        status = systemd.wait_for("STATUS", after=systemd.messages.index(ready) + 1)
        wait_until(lambda: any("2 articles" in m.get("STATUS", "") for m in systemd.messages) or systemd.collect(),
                   what="a STATUS after the first poll")
        assert status
        assert running_pid(load_config(config).data_dir) == proc.pid

        # a source added to config.toml + SIGHUP: polled without a restart
        text = config.read_text(encoding="utf-8")
        config.write_text(text + f'\n[[sources]]\nname = "B"\nurl = "{server.url("/b.xml")}"\ncategory = "news"\n',
                          encoding="utf-8")
        mark = len(systemd.messages)
        proc.send_signal(signal.SIGHUP)
        systemd.wait_for("RELOADING", "1", after=mark)
        systemd.wait_for("READY", "1", after=mark)
        wait_until(lambda: hits(server, "/b.xml") >= 1, what="the added source to be polled")
        wait_until(lambda: "poll B: 1 new" in log.read_text(), what="B's articles stored")

        # an invalid config on SIGHUP: refused, logged, the running config kept
        config.write_text(config.read_text(encoding="utf-8") + "\nthis is not toml = = =\n", encoding="utf-8")
        mark = len(systemd.messages)
        proc.send_signal(signal.SIGHUP)
        refused = systemd.wait_for("READY", "1", after=mark)
        assert "reload refused" in refused["STATUS"]
        wait_until(lambda: "reload refused, keeping the running config" in log.read_text(), what="the refusal logged")
        assert proc.poll() is None  # still running

        # a removed source stops being polled (config repaired, A removed)
        config.write_text(text.replace("[[sources]]", "[[old]]", 1).split("[[old]]")[0]
                          + f'[[sources]]\nname = "B"\nurl = "{server.url("/b.xml")}"\ncategory = "news"\n',
                          encoding="utf-8")
        mark = len(systemd.messages)
        proc.send_signal(signal.SIGHUP)
        systemd.wait_for("READY", "1", after=mark)
        wait_until(lambda: "reload: source A removed" in log.read_text(), what="A removed")
    finally:
        mark = len(systemd.messages)
        code = stop(proc)
        systemd.collect()
        systemd.close()
    assert code == 0, log.read_text()
    assert any(m.get("STOPPING") == "1" for m in systemd.messages[mark:])
    assert "aggregator stopped" in log.read_text()
    assert running_pid(load_config(config).data_dir) is None


def test_one_daemon_per_database_and_cli_commands_beside_it(daemon_setup, server):
    tmp_path, config = daemon_setup
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    try:
        cfg = load_config(config)
        wait_until(lambda: running_pid(cfg.data_dir) == proc.pid, what="the lock")
        second = cli(config, "run", check=1)
        assert f"daemon (pid {proc.pid}) is already running on {cfg.data_dir}" in second.stderr

        status = json.loads(cli(config, "status", "--json").stdout)
        assert status["daemon"] == {"running": True, "pid": proc.pid}

        # add-source beside the daemon: written, stored, and the daemon told to reload
        added = cli(config, "add-source", server.url("/b.xml"), "--name", "B", "--category", "news")
        assert f"The running daemon (pid {proc.pid}) reloads its config now and starts polling it." in added.stdout
        wait_until(lambda: "reload: source B added" in log.read_text(), what="the daemon to reload")
        # the other commands work next to it, on the same database
        for args in (("poll",), ("list-sources",), ("publish",), ("status",), ("explain", "https://a.example/1")):
            result = cli(config, *args)
            assert "database is locked" not in result.stderr + result.stdout
        human = cli(config, "status").stdout
        assert f"running (pid {proc.pid})" in human
    finally:
        assert stop(proc) == 0, log.read_text()
    gone = json.loads(cli(config, "status", "--json").stdout)
    assert gone["daemon"] == {"running": False, "pid": None}
    assert gone["sources"]["total"] == 2 and gone["articles"]["total"] == 3
    assert gone["last_cycle"]["at"] is not None and gone["feeds"]["pages"] > 0


def test_an_unwritable_output_folder_loses_nothing_and_is_caught_up(tmp_path, server):
    server.add("/a.xml", feed("a", 2))
    path = write_config(tmp_path / "config.toml", [{"name": "A", "url": server.url("/a.xml"), "category": "news"}],
                        base_url=BASE)
    cfg = load_config(path)
    cfg.output_dir.mkdir(parents=True)
    (cfg.output_dir / "posts").write_text("a file where the posts folder should be")  # every write fails
    with Pipeline(cfg) as p:
        cycle = p.poll()
    assert cycle.results[0].new == 2 and cycle.results[0].error is None  # stored: the source did not fail
    status = json.loads(cli(path, "status", "--json").stdout)
    assert status["articles"]["total"] == 2
    (cfg.output_dir / "posts").unlink()  # space is back
    server.set("/a.xml", feed("a", 2))  # same items, new bytes: nothing new to store
    with Pipeline(cfg) as p:
        p.poll()
    assert len(list((cfg.output_dir / "posts").glob("*.md"))) == 2
    assert (cfg.output_dir / "all.rss.xml").is_file()
    assert cli(path, "publish").stdout.startswith("0 files written")


def test_rebuild_recreates_every_file_from_the_database(tmp_path, server):
    server.add("/a.xml", feed("a", 3))
    path = write_config(tmp_path / "config.toml", [{"name": "A", "url": server.url("/a.xml"), "category": "news",
                                                     "channel": "c"}], base_url=BASE)
    cfg = load_config(path)
    with Pipeline(cfg) as p:
        p.poll()
    before = {str(f.relative_to(cfg.output_dir)): f.read_bytes() for f in cfg.output_dir.rglob("*") if f.is_file()}
    import shutil

    shutil.rmtree(cfg.output_dir)
    out = cli(path, "rebuild").stdout
    assert f"{len(before)} files written" in out
    after = {str(f.relative_to(cfg.output_dir)): f.read_bytes() for f in cfg.output_dir.rglob("*") if f.is_file()}
    assert after == before


def test_catch_up_removes_only_stale_temporary_files(tmp_path):
    from aggregator.publish.atomic import remove_stale_temp_files

    folder = tmp_path / "out" / "category"
    folder.mkdir(parents=True)
    stale = folder / ".金融.rss.xml.a1b2c3d4.tmp"
    fresh = folder / ".all.json.x9y8z7w6.tmp"
    mine = folder / ".my-notes.tmp"  # not of write_atomic's shape
    for f in (stale, fresh, mine):
        f.write_text("x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(mine, (old, old))
    assert remove_stale_temp_files(tmp_path / "out") == 1
    assert not stale.exists() and fresh.exists() and mine.exists()


def test_lock_is_released_by_a_killed_process(tmp_path):
    code = ("import sys, time; from aggregator.daemon import DaemonLock; DaemonLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env())
    assert proc.stdout.readline().strip() == "locked"
    assert running_pid(tmp_path) == proc.pid
    with pytest.raises(Exception, match=f"pid {proc.pid}"):
        DaemonLock(tmp_path).acquire()
    proc.kill()
    proc.wait()
    assert running_pid(tmp_path) is None
    with DaemonLock(tmp_path):
        assert running_pid(tmp_path) == os.getpid()


def test_notifier_reads_systemd_environment(tmp_path):
    assert not Notifier({}).enabled and Notifier({}).send("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    # the abstract namespace ("@name")
    name = f"aggregator-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("line one\nline two")
        assert sock.recv(1024) == b"STATUS=line one line two"
    finally:
        sock.close()
    # a socket that went away: False, never an exception
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).watchdog() is False


def test_log_lines_text_journald_and_json(tmp_path):
    config = write_config(tmp_path / "config.toml", [], base_url=BASE)
    err = tmp_path / "err.log"
    with err.open("w") as handle:
        st = os.fstat(handle.fileno())
        subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), "-v", "publish"], stderr=handle,
                       stdout=subprocess.DEVNULL, env={**env(), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
                       check=True, timeout=120)
    lines = err.read_text().splitlines()
    assert lines and all(line.startswith("<6>INFO ") for line in lines), lines
    proc = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), "-v", "--log-format", "json",
                           "publish"], capture_output=True, text=True, env=env(), check=True, timeout=120)
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert events and all({"time", "level", "logger", "message"} <= e.keys() for e in events)
    assert any(e["message"].startswith("published:") for e in events)
    # without a matching journal stream: no priority prefix
    plain = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), "-v", "publish"],
                           capture_output=True, text=True, env={**env(), "JOURNAL_STREAM": "1:2"}, check=True,
                           timeout=120)
    assert plain.stderr.startswith("INFO ")


def test_sigterm_during_a_fetch_lets_it_finish_and_exits_0(tmp_path, server):
    arrived = []

    def slow(handler):
        arrived.append(time.monotonic())
        time.sleep(2)
        handler.send_body(feed("s", 2))

    server.add_handler("/slow.xml", slow)
    config = write_config(tmp_path / "config.toml", [{"name": "S", "url": server.url("/slow.xml"), "category": "c"}],
                          base_url=BASE)
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    wait_until(lambda: arrived, what="the fetch to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()
    text = log.read_text()
    assert "poll S: 2 new" in text and "aggregator stopped" in text
    assert len(list((load_config(config).posts_dir).glob("*.md"))) == 2


def test_posts_owed_by_a_commit_are_written_even_when_their_old_file_exists(tmp_path, server):
    """A kill between a commit and its post write: the next poll's publish writes what is
    owed — an edited article's stale file too, not only missing ones."""
    from aggregator.pipeline import article_uid
    from aggregator.publish.posts import post_name
    from aggregator.store import Store

    server.add("/a.xml", feed("a", 1))
    path = write_config(tmp_path / "config.toml", [{"name": "A", "url": server.url("/a.xml"), "category": "news"}],
                        base_url=BASE)
    cfg = load_config(path)
    with Pipeline(cfg) as p:
        p.poll()
    post = next(cfg.posts_dir.glob("*.md"))
    assert "a body 1" in post.read_text()
    # what a poll commits for an edited item, stopped before its file is written
    from aggregator.parse import parse_feed  # noqa: F401 - the same stages as a poll
    from aggregator.work import process_feed
    edited = feed("a", 1).replace(b"a body 1", b"a body 1, corrected")
    processed = process_feed(edited, {}, server.url("/a.xml"), cfg.source("A"), p.clock(), cfg.future_skew,
                             cfg.iframe_hosts)
    with Store(cfg.db_path) as store:
        result = store.apply(processed.drafts, now=p.clock(), name_post=post_name, uid_of=article_uid)
        assert len(result.updated) == 1 and store.pending_posts() == [result.updated[0].id]
    assert "corrected" not in post.read_text()  # the crash window: database ahead of the file
    server.set("/a.xml", edited)  # upstream has the edit; it is already stored: nothing new
    with Pipeline(cfg) as p:
        cycle = p.poll()
    assert cycle.results[0].updated == 0
    assert "a body 1, corrected" in post.read_text()
    with Store(cfg.db_path) as store:
        assert store.pending_posts() == []


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a disk that can really fill up (needs root; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_loses_nothing_and_is_caught_up_when_space_returns(tmp_path, server, small_disk):
    server.add("/a.xml", feed("a", 3))
    path = write_config(tmp_path / "config.toml", [{"name": "A", "url": server.url("/a.xml"), "category": "news"}],
                        base_url=BASE, output_dir=str(small_disk / "out"))
    cfg = load_config(path)
    filler = small_disk / "filler"
    with filler.open("wb") as handle:  # fill the disk to the last block
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    with Pipeline(cfg) as p:
        cycle = p.poll()
    assert cycle.results[0].new == 3 and cycle.results[0].error is None  # stored in the database (not on this disk)
    assert not list(cfg.posts_dir.glob("*.md"))
    status = json.loads(cli(path, "status", "--json").stdout)
    assert status["articles"]["total"] == 3
    filler.unlink()  # space is back
    server.set("/a.xml", feed("a", 3))
    with Pipeline(cfg) as p:
        p.poll()
    assert len(list(cfg.posts_dir.glob("*.md"))) == 3
    assert len(parse_feed_entries(cfg.output_dir / "all.rss.xml")) == 3
    assert cli(path, "publish").stdout.startswith("0 files written")


def parse_feed_entries(path: Path) -> list:
    from tests.helpers import parse_output_feed

    return parse_output_feed(path).entries
