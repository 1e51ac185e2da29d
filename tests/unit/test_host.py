"""The service install on this host: which environment file a command reads, and the
service's TOML file and state directory as defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.host import ServiceInstall, choose_env_file, env_file_problem, service_install
from agent.settings import load_settings
from tests.conftest import BASE_ENV


def _install(root: Path, **extra: str) -> ServiceInstall:
    """A service install under ``root``: the environment file and the TOML file."""
    install = ServiceInstall(root)
    install.env_file.parent.mkdir(parents=True)
    values = {k: v for k, v in BASE_ENV.items() if k != "AGENT_CONFIG"} | extra
    install.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    install.config_file.write_text(Path(BASE_ENV["AGENT_CONFIG"]).read_text())
    return install


@pytest.mark.parametrize(
    ("no_env_file", "given", "local", "installed", "chosen", "origin"),
    [
        (True, None, True, True, None, "--no-env-file"),
        (False, "mine.env", True, True, "mine.env", "--env-file"),
        (False, None, True, True, ".env", ".env in the working directory"),
        (False, None, False, True, "service", "the service's"),
        (False, None, False, False, None, "no service installed"),
    ],
)
def test_which_environment_file_a_command_reads(
    tmp_path: Path,
    no_env_file: bool,
    given: str | None,
    local: bool,
    installed: bool,
    chosen: str | None,
    origin: str,
) -> None:
    """--no-env-file, then --env-file, then .env here, then the installed service's file."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if local:
        (cwd / ".env").write_text("")
    root = tmp_path / "root"
    if installed:
        _install(root)
    choice = choose_env_file(
        Path(given) if given else None,
        no_env_file=no_env_file,
        cwd=cwd,
        environ={"DEVOPS_AGENT_ROOT": str(root)},
    )
    expected = {
        None: None,
        "mine.env": Path("mine.env"),
        ".env": cwd / ".env",
        "service": ServiceInstall(root).env_file,
    }[chosen]
    assert choice.path == expected and origin in choice.origin
    assert (choice.service is not None) == (chosen == "service")


def test_the_service_file_named_with_env_file_still_brings_its_defaults(tmp_path: Path) -> None:
    """--env-file pointing at the service's own file is the service's install all the same."""
    install = _install(tmp_path)
    environ = {"DEVOPS_AGENT_ROOT": str(tmp_path)}
    choice = choose_env_file(install.env_file, no_env_file=False, cwd=tmp_path, environ=environ)
    assert choice.service == install
    assert service_install({"DEVOPS_AGENT_ROOT": str(tmp_path / "elsewhere")}) is None


def test_service_defaults_and_what_wins_over_them(tmp_path: Path) -> None:
    """On a service host the TOML file next to the environment file and the store in the
    state directory are the defaults; AGENT_STATE_URL in the file and --config win."""
    install = _install(tmp_path / "root")
    settings = load_settings(install.env_file, service=install)
    assert settings.env.agent_config == install.config_file
    assert settings.env.state_url == f"sqlite:///{install.state_dir / 'agent.db'}"
    other = _install(tmp_path / "other", AGENT_STATE_URL="sqlite:////srv/agent.db")
    config = tmp_path / "elsewhere.toml"
    config.write_text(install.config_file.read_text())
    settings = load_settings(other.env_file, service=other, config=config)
    assert settings.env.state_url == "sqlite:////srv/agent.db"
    assert settings.env.agent_config == config


def test_a_missing_environment_file_is_one_line(tmp_path: Path) -> None:
    """An environment file that is not there is one problem naming it, nothing else."""
    missing = tmp_path / "agent.env"
    assert env_file_problem(missing) == f"environment file {missing} does not exist"
    with pytest.raises(ConfigError) as info:
        load_settings(missing)
    assert list(info.value.problems) == [f"environment file {missing} does not exist"]
    assert env_file_problem(tmp_path) == f"environment file {tmp_path} is not a file"
