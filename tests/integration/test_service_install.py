"""The README's "Install as a service", run for real: `make install-service` into a staging
root (DESTDIR), the environment file edited, then the installed unit's ExecStart exactly as
written, with the installed file modes, as an unprivileged user the way systemd's
DynamicUser= runs it, against a real Prometheus: the daemon reaches READY and sweeps, and
the unit's ExecReload makes it read its agent.toml again.

systemd is not running on the test machine, so the test does systemd's part as the unit
asks: it reads EnvironmentFile= as root, sets Environment=, CONFIGURATION_DIRECTORY,
STATE_DIRECTORY and NOTIFY_SOCKET, expands ``${VAR}`` in ExecStart, changes to
WorkingDirectory= and drops to an unused uid with ``setpriv``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.local import LocalPrometheus
from tests.conftest import BASE_ENV, REPO
from tests.integration.daemon_support import DaemonProcess, NotifySocket

pytestmark = pytest.mark.integration

#: An unused uid in the range systemd gives dynamic users (no passwd entry, no groups).
DYNAMIC_UID = 61234
#: What a checkout holds that the install needs (the test copies the working tree).
CHECKOUT = ("agent", "config", "systemd", "Makefile", "pyproject.toml", "README.md", ".env.example")
#: systemd's default PATH for system services.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def root() -> Iterator[Path]:
    """A temporary directory every user may traverse (pytest's own is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="devops-agent-install-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _checkout(dest: Path) -> Path:
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CHECKOUT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def _unit(path: Path) -> dict[str, list[str]]:
    """The [Service] settings of a unit file, each key with all its values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            settings.setdefault(key, []).append(value)
    return settings


def _env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _edit(path: Path, values: dict[str, str]) -> None:
    """The README's `sudoedit`: set the variables, keep the rest of the file and its mode."""
    lines = path.read_text().splitlines()
    for key, value in values.items():
        lines = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in lines]
    path.write_text("\n".join(lines) + "\n")


def _expand(word: str, env: dict[str, str]) -> str:
    """systemd's ``${VAR}`` expansion inside one ExecStart word."""
    return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word)


def _as_dynamic_user(*argv: str) -> list[str]:
    return [
        "setpriv",
        f"--reuid={DYNAMIC_UID}",
        f"--regid={DYNAMIC_UID}",
        "--clear-groups",
        "--",
        *argv,
    ]


def test_installed_unit_starts_as_its_dynamic_user(root: Path) -> None:
    """`make install-service DESTDIR=...` (runtime dependencies only, the system's Python),
    then ExecStart as written, as an unprivileged uid: READY=1, a sweep of the local
    Prometheus, a reload by ExecReload, a clean stop; the environment file is never read by
    that user."""
    assert shutil.which("setpriv"), "setpriv is missing (Debian package util-linux)"
    checkout = _checkout(root / "opt" / "devops-agent")
    stage = root / "stage"
    made = subprocess.run(
        ["make", "-C", str(checkout), "install-service", f"DESTDIR={stage}"],
        # the real HOME: pip reuses the wheels `make install` downloaded
        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    freeze = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-m", "pip", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for tool in ("pytest", "selenium", "llama", "ruff", "mypy", "hypothesis"):
        assert tool not in freeze, f"{tool} installed by the runtime install"

    unit = _unit(stage / "etc" / "systemd" / "system" / "devops-agent.service")
    [env_path_text] = unit["EnvironmentFile"]
    env_path = stage / env_path_text.lstrip("/")
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o640 and env_path.stat().st_uid == 0
    assert "AGENT_CONFIG" not in _env_file(env_path)

    prometheus = LocalPrometheus(root / "prom", targets={}).start()
    notify_dir = root / "notify"
    notify_dir.mkdir(mode=0o755)
    notify = NotifySocket(notify_dir / "notify.sock")
    (notify_dir / "notify.sock").chmod(0o777)
    state = stage / "var" / "lib" / "devops-agent"
    state.mkdir(mode=0o700, parents=True)
    os.chown(state, DYNAMIC_UID, DYNAMIC_UID)
    daemon: DaemonProcess | None = None
    try:
        _edit(
            env_path,
            {
                "PROMETHEUS_URL": prometheus.url,
                # nothing listens there: the probe must fail them, never reach the internet
                "AI_COMMAND_GATEWAY_URL": "http://127.0.0.1:9",
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                "OPENAI_API_KEY": BASE_ENV["OPENAI_API_KEY"],
                "METRICS_ADDR": "127.0.0.1:0",
            },
        )
        env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
        for assignments in unit["Environment"]:
            env.update(word.partition("=")[::2] for word in shlex.split(assignments))
        env.update(_env_file(env_path))  # read by systemd, as root
        env.update(
            CONFIGURATION_DIRECTORY=str(stage / "etc" / "devops-agent"),
            STATE_DIRECTORY=str(state),
            NOTIFY_SOCKET=str(notify.path),
        )
        [exec_start] = unit["ExecStart"]
        argv = [_expand(word, env) for word in shlex.split(exec_start)]
        assert argv[0] == str(checkout / ".venv" / "bin" / "devops-agent")
        [workdir] = unit["WorkingDirectory"]
        daemon = DaemonProcess(env, Path(workdir), argv=_as_dynamic_user(*argv), log_dir=root)
        notify.wait_for("READY=1", timeout=60)
        daemon.wait_for("sweep_finished", where=lambda e: e.get("failed_sources") == [])
        _reload_as_the_unit_does(unit, daemon, stage / "etc" / "devops-agent" / "agent.toml")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, daemon.tail()
        assert (state / "agent.db").stat().st_uid == DYNAMIC_UID
        unreadable = subprocess.run(_as_dynamic_user("cat", str(env_path)), capture_output=True)
        assert unreadable.returncode != 0, "the service's user can read its environment file"
        _the_cli_finds_the_service(stage, root / "shell", prometheus.url)
        refused = subprocess.run(
            _as_dynamic_user(
                str(checkout / ".venv/bin/devops-agent"),
                "--env-file",
                str(env_path),
                "check-config",
            ),
            env={"PATH": SYSTEM_PATH},
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 78
        _an_admin_group_member_reads_the_file_not_the_store(stage, root / "shell", env_path)
        assert (
            f"environment file {env_path} cannot be read by uid {DYNAMIC_UID}: it is root:root 0640"
            in refused.stderr
        )
    finally:
        if daemon is not None:
            daemon.close()
        notify.close()
        prometheus.stop()


def _reload_as_the_unit_does(unit: dict[str, list[str]], daemon: DaemonProcess, toml: Path) -> None:
    """`systemctl reload`: the unit's ExecReload as written, run as the service's user with
    $MAINPID set, makes the daemon read its agent.toml again (a changed interval shows)."""
    toml.write_text(
        toml.read_text().replace("sweep_interval_seconds = 30", "sweep_interval_seconds = 45")
    )
    [exec_reload] = unit["ExecReload"]
    argv = [w.replace("$MAINPID", str(daemon.proc.pid)) for w in shlex.split(exec_reload)]
    subprocess.run(_as_dynamic_user(*argv), check=True, timeout=10)
    [reloaded] = daemon.wait_for("config_reloaded")
    assert reloaded["changed"] == ["schedule"], reloaded
    [changed] = daemon.wait_for("schedule_changed")
    assert changed["sweep_interval_seconds"] == 45


def _the_cli_finds_the_service(stage: Path, shell: Path, prometheus: str) -> None:
    """The linked CLI, run by root with nothing but the install, reads the service's
    environment file, TOML file and store; its probe reaches Prometheus and the store and
    names the peers that do not answer."""
    shell.mkdir()
    cli = stage / "usr" / "local" / "bin" / "devops-agent"
    env = {"PATH": SYSTEM_PATH, "HOME": str(shell), "DEVOPS_AGENT_ROOT": str(stage)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(cli), *args], env=env, cwd=shell, capture_output=True, text=True, timeout=60
        )

    checked = run("check-config")
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == f"environment file: {stage}/etc/devops-agent/agent.env (the service's)"
    assert lines[1] == f"incident store: sqlite:///{stage}/var/lib/devops-agent/agent.db"
    config = re.escape(f"{stage}/etc/devops-agent/agent.toml: ")
    assert re.search(rf"\(config file\)\s+{config}", checked.stdout), checked.stdout
    probed = run("check-config", "--probe")
    assert probed.returncode == 1
    assert f"ok    Prometheus at {prometheus}: ok (version " in probed.stdout
    assert re.search(
        r"ok    incident store sqlite:///\S+: ok \(schema version \d+, writable\)", probed.stdout
    ), probed.stdout
    assert "FAIL  gateway at http://127.0.0.1:9 unreachable" in probed.stdout
    listed = run("incidents", "-v")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"incident store: sqlite:///{stage}/var/lib/devops-agent/")


def _an_admin_group_member_reads_the_file_not_the_store(
    stage: Path, shell: Path, env_path: Path
) -> None:
    """A member of the environment file's group checks the configuration; the SQLite store
    in the service's private state directory is named as out of reach, not as missing."""
    member = ["setpriv", "--reuid=61235", "--regid=61235", f"--groups={env_path.stat().st_gid}"]
    env = {"PATH": SYSTEM_PATH, "HOME": str(shell), "DEVOPS_AGENT_ROOT": str(stage)}
    cli = str(stage / "usr" / "local" / "bin" / "devops-agent")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*member, "--", cli, *args], env=env, cwd=shell, capture_output=True, text=True
        )

    checked = run("check-config")
    assert checked.returncode == 0, checked.stderr
    listed = run("incidents")
    assert listed.returncode == 1
    assert listed.stderr.startswith(
        f"devops-agent: incident store {stage}/var/lib/devops-agent/agent.db cannot be read by "
        "uid 61235: permission denied"
    ), listed.stderr
