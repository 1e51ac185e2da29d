"""The service install on this host, and which environment file a command reads.

``make install-service`` puts the service's environment file and TOML file in
``/etc/devops-agent/`` and systemd keeps its state in ``/var/lib/devops-agent``. A command
run on that host (the on-call answering an approval at 3 a.m.) must act on *that* agent,
not on an empty store of its own: so when no ``--env-file`` and no ``.env`` in the working
directory says otherwise, the command reads the service's environment file, and takes the
service's TOML file and state directory as defaults.

The service itself never looks: systemd reads the environment file (``EnvironmentFile=``)
and the unit passes ``--no-env-file``. ``DEVOPS_AGENT_ROOT`` names the directory the
install lives under (default ``/``), for staged installs and tests only.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The directory a service install lives under; ``/`` unless set (staged installs, tests).
ROOT_VARIABLE = "DEVOPS_AGENT_ROOT"
#: The group whose members may read the service's environment file (and so run the CLI).
ADMIN_GROUP = "devops-agent"


@dataclass(frozen=True)
class ServiceInstall:
    """Where ``make install-service`` and systemd keep the service's files."""

    root: Path

    @property
    def env_file(self) -> Path:
        """The environment file systemd reads for the unit (``EnvironmentFile=``)."""
        return self.root / "etc" / "devops-agent" / "agent.env"

    @property
    def config_file(self) -> Path:
        """The TOML file the unit passes with ``--config``."""
        return self.root / "etc" / "devops-agent" / "agent.toml"

    @property
    def state_dir(self) -> Path:
        """The unit's ``StateDirectory=``: the SQLite store's directory by default."""
        return self.root / "var" / "lib" / "devops-agent"


def service_install(environ: Mapping[str, str]) -> ServiceInstall | None:
    """The service installed on this host (its environment file exists), if any."""
    install = ServiceInstall(Path(environ.get(ROOT_VARIABLE) or "/"))
    try:
        install.env_file.lstat()
    except OSError:
        return None
    return install


@dataclass(frozen=True)
class EnvChoice:
    """The environment file a command reads, why, and the service install it belongs to
    (whose TOML file and state directory are then the defaults)."""

    path: Path | None
    origin: str
    service: ServiceInstall | None = None

    def line(self) -> str:
        """One line saying which environment file was read."""
        if self.path is None:
            return f"environment file: none ({self.origin})"
        return f"environment file: {self.path} ({self.origin})"


def choose_env_file(
    given: Path | None, *, no_env_file: bool, cwd: Path, environ: Mapping[str, str]
) -> EnvChoice:
    """``--no-env-file``, else ``--env-file``, else ``.env`` in the working directory, else
    the service's environment file when the service is installed here, else none."""
    install = service_install(environ)
    if no_env_file:
        return EnvChoice(None, "--no-env-file: the environment is complete")
    if given is not None:
        own = install is not None and _same(given, install.env_file)
        return EnvChoice(given, "--env-file", install if own else None)
    local = cwd / ".env"
    if local.is_file():
        return EnvChoice(local, ".env in the working directory")
    if install is not None:
        return EnvChoice(install.env_file, "the service's", install)
    return EnvChoice(None, "no --env-file, no .env here and no service installed")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def current_user() -> str:
    """This process's user, as a person reads it: ``user alice (uid 1000)``."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
    return f"user {name} (uid {uid})"


def _owner(info: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        user = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{user}:{group} {stat.S_IMODE(info.st_mode):04o}"


def env_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an environment file, in one line; None when it can."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"environment file {path} does not exist"
    except PermissionError:
        return f"environment file {path} cannot be reached by {current_user()}: permission denied"
    except OSError as exc:
        return f"environment file {path}: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"environment file {path} is not a file"
    try:
        with path.open("rb"):
            pass
    except PermissionError:
        return (
            f"environment file {path} cannot be read by {current_user()}: it is "
            f"{_owner(info)}; run as root or as a member of its group (README: the admin "
            f"group {ADMIN_GROUP})"
        )
    except OSError as exc:
        return f"environment file {path}: {exc.strerror}"
    return None
