"""deploy/aggregator.service as shipped: systemd's own checks (``verify`` without a single
warning, ``security`` exposure at most 2.0), the settings issue 7 asks for, the docs that
explain them, and the real daemon running inside the unit's seccomp sandbox.

A test cannot start the unit (no systemd as PID 1 here, and no root), so the sandbox tests
rebuild the part of the sandbox that can break a working daemon without any message at
start: the seccomp filters systemd derives from ``SystemCallFilter=``,
``SystemCallErrorNumber=``, ``MemoryDenyWriteExecute=``, ``RestrictAddressFamilies=`` and
``RestrictNamespaces=``. They are read from the unit file itself, the syscall groups are
expanded by ``systemd-analyze syscall-filter`` (the table systemd compiles in), and they are
loaded with libseccomp in the order systemd loads them, then the unit's ``ExecStart=``
arguments are exec'd. A filtered call the daemon needs would kill it or surface as an error;
a filter that silently failed to load is caught by control calls that must be refused.
Mount, user and IP namespaces (``ProtectSystem=``, ``PrivateUsers=``, ``ProcSubset=``…)
need privileges and are not rebuilt; docs/systemd.md lists what the daemon touches there.

Run as a script, this file is that loader: ``test_deploy.py SPEC_JSON PROGRAM ARGS...``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import Systemd, numbered_feed

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "aggregator.service"
SYSUSERS = ROOT / "deploy" / "aggregator.sysusers"
DOC = ROOT / "docs" / "systemd.md"
MAX_EXPOSURE = 2.0  # issue 7; Miniflux's unit rates 7.3


# --- reading the unit -----------------------------------------------------------------

def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; repeated keys stay separate, as systemd reads
    them (``SystemCallFilter=`` lines apply one after the other)."""
    entries, section, pending = [], "", ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):  # continuation line
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def service(key: str) -> list[str]:
    return [v for s, k, v in unit_entries(UNIT.read_text(encoding="utf-8")) if s == "Service" and k == key]


def one(key: str) -> str:
    values = service(key)
    assert len(values) == 1, f"{key}= should be set once in {UNIT.name}, found {values}"
    return values[0]


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def seconds(span: str) -> float:
    """A systemd time span ("90s", "2min 30s", "120") in seconds; a bare number is seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), span
    return sum(float(n) * _UNITS[u or "s"] for n, u in parts)


# --- systemd-analyze ------------------------------------------------------------------

def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return path


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([systemd_analyze(), *args], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})


def systemd_version() -> int:
    return int(re.match(r"systemd (\d+)", analyze("--version").stdout).group(1))


def measured_exposure() -> tuple[float, str]:
    if "--offline" not in analyze("--help").stdout:
        pytest.skip(f"systemd-analyze {systemd_version()} has no --offline (systemd 250 added it)")
    proc = analyze("security", "--offline=true", "--no-pager", str(UNIT))
    found = re.search(r"Overall exposure level for aggregator\.service: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return float(found.group(1)), proc.stdout


def verify_root(tmp_path: Path, *, with_programs: bool = True) -> Path:
    """A file-system root for ``verify --root=``: the host's unit files (the unit pulls in
    sysinit.target and friends), the unit under test, and a stub at the path of every
    program its Exec*= lines name, because verify checks that they exist and are
    executable. Stubs replace the installed venv; nothing in the unit is relaxed."""
    root = tmp_path / "root"
    for units in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if units.is_dir():
            shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
            break
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    if with_programs:
        for section, key, value in unit_entries(UNIT.read_text(encoding="utf-8")):
            if section == "Service" and key.startswith("Exec") and value:
                program = root / value.lstrip("-@:+!|").split()[0].lstrip("/")
                program.parent.mkdir(parents=True, exist_ok=True)
                program.write_text("#!/bin/sh\nexit 0\n")
                program.chmod(0o755)
    return root


def test_verify_passes_without_a_warning(tmp_path):
    root = verify_root(tmp_path)
    proc = analyze("verify", f"--root={root}", UNIT.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # verify exits 0 even for "Unknown key", a bad value ignored, a missing program: any line is a finding
    assert (proc.stdout + proc.stderr).strip() == ""


def test_verify_still_checks_the_programs_under_the_temporary_root(tmp_path):
    """The control for the test above: --root= only supplies files, it switches no check off."""
    root = verify_root(tmp_path, with_programs=False)
    proc = analyze("verify", f"--root={root}", UNIT.name)
    program = one("ExecStart").split()[0]
    assert f"Command {program} is not executable" in proc.stdout + proc.stderr


def test_security_exposure_is_at_most_2():
    exposure, table = measured_exposure()
    assert exposure <= MAX_EXPOSURE, table


def test_docs_quote_the_measured_exposure():
    """docs/systemd.md quotes systemd-analyze's verdict and the version that gave it; a unit
    change that moves the score must update the doc. Another systemd version weighs
    differently, so the numbers are compared only when the versions agree."""
    doc = DOC.read_text(encoding="utf-8")
    stated = re.search(r"Overall exposure level for aggregator\.service: (\d+\.\d+)", doc)
    version = re.search(r"systemd-analyze security[^\n]*\(systemd (\d+)\b", doc)
    assert stated and version, "docs/systemd.md should quote the security verdict and the systemd version"
    exposure, _ = measured_exposure()
    if systemd_version() != int(version.group(1)):
        pytest.skip(f"the doc's figure is from systemd {version.group(1)}, this is {systemd_version()}")
    assert float(stated.group(1)) == exposure


# --- the settings issue 7 names -------------------------------------------------------

def test_unit_has_the_lifecycle_settings_of_a_notify_daemon():
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"  # the parse workers must not be able to report for it
    assert seconds(one("WatchdogSec")) > 0
    assert one("Restart") == "on-failure"
    reload = one("ExecReload").split()
    assert Path(reload[0]).name == "kill" and "$MAINPID" in reload
    assert "-HUP" in reload or reload[reload.index("-s") + 1] in ("HUP", "SIGHUP")
    assert one("KillMode") == "mixed"  # SIGTERM to the daemon, which stops its own workers


def test_stop_timeout_outlasts_the_polls_in_flight():
    """SIGTERM lets in-flight fetches finish, each bounded by the ``timeout`` setting."""
    from aggregator.config import SETTINGS

    fetch_timeout = next(s.default for s in SETTINGS if s.name == "timeout")
    assert seconds(one("TimeoutStopSec")) > fetch_timeout


def test_unit_writes_only_to_its_state_directory():
    assert one("StateDirectory") == "aggregator"
    assert one("ConfigurationDirectory") == "aggregator"
    assert one("ProtectSystem") == "strict"  # everything else read-only
    assert one("WorkingDirectory") == f"/var/lib/{one('StateDirectory')}"
    assert f"AGGREGATOR_CONFIG=/etc/{one('ConfigurationDirectory')}/config.toml" in service("Environment")
    assert one("ExecStart").startswith("/opt/aggregator/venv/bin/aggregator run")


@pytest.mark.parametrize(("key", "value"), [
    ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("NoNewPrivileges", "yes"), ("PrivateDevices", "yes"),
    ("PrivateUsers", "yes"), ("ProtectProc", "invisible"), ("ProcSubset", "pid"), ("CapabilityBoundingSet", ""),
    ("RestrictNamespaces", "yes"), ("MemoryDenyWriteExecute", "yes"), ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"), ("UMask", "0022"),
])
def test_hardening_setting(key, value):
    assert one(key) == value


def test_address_families_and_system_calls():
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    filters = service("SystemCallFilter")
    assert filters[0] == "@system-service"  # an allow list: everything else is refused
    denied = {g for f in filters[1:] if f.startswith("~") for g in f[1:].split()}
    assert {"@privileged", "@resources"} <= denied


def test_sysusers_declares_the_units_user_with_the_state_directory_as_home():
    assert "DynamicUser" not in {k for _, k, _ in unit_entries(UNIT.read_text(encoding="utf-8"))}
    lines = [shlex.split(ln) for ln in SYSUSERS.read_text(encoding="utf-8").splitlines() if ln and ln[0] != "#"]
    users = {fields[1]: fields for fields in lines if fields[0] == "u"}
    assert one("User") in users and one("Group") == one("User")
    assert users[one("User")][-1] == f"/var/lib/{one('StateDirectory')}"


def test_every_setting_of_the_unit_is_explained_in_the_docs():
    doc = DOC.read_text(encoding="utf-8")
    keys = {k for s, k, _ in unit_entries(UNIT.read_text(encoding="utf-8")) if s == "Service"}
    assert not sorted(k for k in keys if f"`{k}=" not in doc)


# --- the daemon inside the unit's seccomp sandbox -------------------------------------

SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 4, 6, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)

# A filter is {"default": action, "rules": [[syscall, action, [[arg, op, a, b], ...]], ...]};
# an action is null (allow), "kill" (kill the process) or an errno number.


def syscall_groups() -> dict[str, list[str]]:
    proc = analyze("syscall-filter", "--no-pager")
    groups: dict[str, list[str]] = {}
    members: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.split()[0], [])
        elif line.strip() and not line.lstrip().startswith("#"):
            members.append(line.split()[0])
    assert "@system-service" in groups, proc.stdout[:500]
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def seccomp_filters() -> list[dict]:
    """The unit's seccomp filters, built as systemd builds them (src/shared/seccomp-util.c),
    in its order: the system-call allow list last, since it does not allow loading more."""
    filters = []
    if one("RestrictNamespaces") == "yes":
        # clone3 takes its flags in memory seccomp cannot read: systemd answers ENOSYS, and
        # glibc falls back to clone(), whose flags it can check
        rules: list = [["clone3", errno.ENOSYS, []], ["setns", errno.EPERM, []]]
        rules += [[call, errno.EPERM, [[0, SCMP_CMP_MASKED_EQ, flag, flag]]]
                  for call in ("clone", "unshare") for flag in CLONE_NEW]
        filters.append({"default": None, "rules": rules})
    if one("MemoryDenyWriteExecute") == "yes":
        filters.append({"default": None, "rules": [
            ["mmap", errno.EPERM, [[2, SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC]]],
            ["mprotect", errno.EPERM, [[2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC]]],
            ["pkey_mprotect", errno.EPERM, [[2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC]]],
            ["shmat", errno.EPERM, [[2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC]]],
        ]})
    families = {getattr(socket, name) for name in one("RestrictAddressFamilies").split()}
    refused = [f for f in range(max(families)) if f not in families]
    filters.append({"default": None, "rules": [["socket", errno.EAFNOSUPPORT, [[0, SCMP_CMP_EQ, f, 0]]] for f in refused]
                    + [["socket", errno.EAFNOSUPPORT, [[0, SCMP_CMP_GT, max(families), 0]]]]})
    groups = syscall_groups()
    allowed: set[str] = set()
    for i, line in enumerate(service("SystemCallFilter")):
        names = line.lstrip("~").split()
        if i == 0:
            assert not line.startswith("~")
            allowed = expand(names, groups) | expand(["@default"], groups)  # systemd adds @default to allow lists
        elif line.startswith("~"):
            allowed -= expand(names, groups)
        else:
            allowed |= expand(names, groups)
    errno_name = service("SystemCallErrorNumber")
    filters.append({"default": getattr(errno, errno_name[-1]) if errno_name else "kill",
                    "rules": [[name, None, []] for name in sorted(allowed)]})
    return filters


def load_and_exec(spec: str, argv: list[str]) -> None:
    """The loader: each filter through libseccomp (which also sets no_new_privs), then exec."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)

    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    def action(a) -> int:
        return 0x7FFF0000 if a is None else 0x80000000 if a == "kill" else 0x00050000 | (a & 0xFFFF)

    for f in json.loads(spec):
        ctx = lib.seccomp_init(action(f["default"]))
        for name, act, conds in f["rules"]:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a system call of this architecture (the groups list every arch's)
                continue
            args = (ArgCmp * len(conds))(*(ArgCmp(*c) for c in conds)) if conds else None
            if rc := lib.seccomp_rule_add_array(ctx, action(act), nr, len(conds), args):
                raise SystemExit(f"seccomp rule {name} {act} {conds}: {os.strerror(-rc)}")
        if rc := lib.seccomp_load(ctx):
            raise SystemExit(f"seccomp_load: {os.strerror(-rc)}")
        lib.seccomp_release(ctx)
    os.execv(argv[0], argv)


@pytest.fixture
def sandbox() -> list[str]:
    """The command prefix that runs a program inside the unit's seccomp filters."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the seccomp rebuild reads clone() flags as the first argument: x86_64 and aarch64")
    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp is not installed (Debian: libseccomp2)")
    return [sys.executable, __file__, json.dumps(seccomp_filters())]


def sandbox_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGGREGATOR_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    for assignment in service("Environment"):  # the unit's own environment (config path replaced below)
        key, _, value = assignment.partition("=")
        env[key] = value
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_sandbox_refuses_what_the_unit_forbids_and_workers_still_limit_their_memory(sandbox):
    """Controls first (the filters are really loaded: each refusal needs a different one),
    then the one resource call the daemon makes: parse workers lowering RLIMIT_AS, which
    their initializer would otherwise fail at silently."""
    script = """if True:
        import errno, json, mmap, os, resource, socket
        from aggregator.work import WORKER_MEMORY_LIMIT, make_pool

        def refused(call):
            try:
                call()
            except OSError as e:
                return errno.errorcode[e.errno]
            return None

        with make_pool(1) as pool:
            worker = pool.submit(resource.getrlimit, resource.RLIMIT_AS).result()
        print(json.dumps({
            "worker_limit": worker[0],
            "expected": min(WORKER_MEMORY_LIMIT, resource.getrlimit(resource.RLIMIT_AS)[1] % 2**64),
            "nice": refused(lambda: os.nice(1)),
            "wx_mapping": refused(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)),
            "netlink": refused(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
        }))
    """
    proc = subprocess.run([*sandbox, sys.executable, "-c", script], check=False, capture_output=True, text=True,
                          timeout=60, env=sandbox_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    unit_errno = errno.errorcode[getattr(errno, one("SystemCallErrorNumber"))]
    assert got["nice"] == unit_errno  # @resources is denied
    assert got["wx_mapping"] == "EPERM"  # MemoryDenyWriteExecute=
    assert got["netlink"] == "EAFNOSUPPORT"  # RestrictAddressFamilies=
    assert got["worker_limit"] == got["expected"]


rss = numbered_feed




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of a GET; an error status is an answer too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_daemon_lives_through_start_reload_and_stop_inside_the_sandbox(sandbox, tmp_path, server):
    """``ExecStart=``'s arguments under the unit's filters and environment, with systemd's
    side played by a notification socket: READY, STATUS, WATCHDOG, a served feed (brotli,
    uvicorn), a SIGHUP reload that adds a source (what ExecReload= sends), and SIGTERM
    while that source's fetch is in flight: the poll finishes and is published, STOPPING
    is sent and the exit status is 0 within TimeoutStopSec (KillMode=mixed relies on it).
    The watchdog period is shortened so a ping arrives within the test; everything else
    is the unit's."""
    import brotli

    from tests.conftest import write_config

    b_asked, b_may_answer = threading.Event(), threading.Event()

    def slow_b(handler) -> None:
        b_asked.set()
        b_may_answer.wait(30)
        handler.send_body(rss("b", 2))

    server.add("/a.xml", rss("a", 3))
    port = free_port()
    a = {"name": "A", "url": server.url("/a.xml"), "category": "news"}
    b = {"name": "B", "url": server.add_handler("/b.xml", slow_b), "category": "news"}
    config = write_config(tmp_path / "config.toml", [a], serve_port=port)
    systemd = Systemd(tmp_path)
    program, *args = one("ExecStart").split()
    assert Path(program).name == "aggregator"
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [*sandbox, sys.executable, "-m", "aggregator", *args], cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
        env=sandbox_env(AGGREGATOR_CONFIG=str(config), NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="1000000"))
    try:
        systemd.wait_for("READY", "1")
        base = f"http://127.0.0.1:{port}"

        def served_feed() -> str:
            status, headers, body = get(f"{base}/all.rss.xml", **{"Accept-Encoding": "br"})
            ok = status == 200 and headers.get("content-encoding") == "br"
            return brotli.decompress(body).decode() if ok else ""

        wait(lambda: "a story 3" in served_feed(), "A's items in the served feed")
        assert get(f"{base}/healthz")[0] == 200
        systemd.wait_for("WATCHDOG", "1")
        assert any("STATUS" in m for m in systemd.messages)

        write_config(config, [a, b], serve_port=port)
        seen = len(systemd.messages)
        daemon.send_signal(signal.SIGHUP)
        systemd.wait_for("READY", "1", after=seen)  # RELOADING=1 ... READY=1 around the re-read
        assert b_asked.wait(60), "the source added by the reload was never fetched"

        daemon.send_signal(signal.SIGTERM)  # with B's fetch in flight
        b_may_answer.set()
        assert daemon.wait(timeout=seconds(one("TimeoutStopSec"))) == 0, log.read_text()
        systemd.wait_for("STOPPING", "1")
    finally:
        b_may_answer.set()
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)  # the daemon and its workers: the group it leads
            daemon.wait()
        systemd.close()
    assert "b story 2" in (tmp_path / "out" / "all.rss.xml").read_text(encoding="utf-8")
    text = log.read_text()
    assert "Traceback" not in text and not re.search(r"^(ERROR|CRITICAL)", text, re.MULTILINE), text


def wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


if __name__ == "__main__":
    load_and_exec(sys.argv[1], sys.argv[2:])
