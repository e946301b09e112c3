"""The deployment files, checked for what a broken compose file or Dockerfile would get wrong.

Docker cannot run here, so these tests read the files: commands are real ``tvr`` commands, health checks
hit real routes, start-up order and mounts are as the README describes, every variable is documented.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tvr_cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
URL_PATH = re.compile(r"http://(?:127\.0\.0\.1|localhost):8000(/[\w/-]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def _served(path: str) -> bool:
    """True when the app has a GET route at ``path`` (not loaded: it may answer 503, but not 404/405)."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    return TestClient(create_app()).get(path).status_code not in (404, 405)


def _tvr_commands(compose: dict) -> list[list[str]]:
    commands = [svc["command"] for svc in compose["services"].values() if "command" in svc]
    for dockerfile in DOCKERFILES:
        cmd = re.search(r"^CMD (\[.*\])$", dockerfile.read_text(), re.MULTILINE)
        assert cmd, f"{dockerfile.name} has no exec-form CMD"
        commands.append(yaml.safe_load(cmd.group(1)))
    return [c for c in commands if c[0] == "tvr"]


def test_every_command_is_a_real_tvr_command_with_real_options(compose):
    commands = _tvr_commands(compose)
    assert {tuple(c[:2]) for c in commands} >= {("tvr", "serve"), ("tvr", "ingest"), ("tvr", "db")}
    runner = CliRunner()
    for command in commands:
        # --help is eager, but an unknown option or sub-command still fails while parsing.
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{shlex.join(command)}: {result.output}"


def test_health_checks_point_at_real_routes(compose):
    checks = [" ".join(svc["healthcheck"]["test"]) for svc in compose["services"].values() if "healthcheck" in svc]
    checks += [f.read_text() for f in DOCKERFILES]
    paths = [m for text in checks for m in URL_PATH.findall(text)]
    assert "/readyz" in paths
    for path in paths:
        assert _served(path), f"health check calls {path}, which the app does not serve"
    for dockerfile in DOCKERFILES:
        assert "HEALTHCHECK" in dockerfile.read_text()


def test_start_up_order_waits_for_a_healthy_database_and_finished_migrations(compose):
    services = compose["services"]
    assert "healthcheck" in services["db"], "service_healthy needs a health check on db"
    assert services["migrate"]["command"] == ["tvr", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "indexer", "indexer-gpu"):
        depends = services[name]["depends_on"]
        assert depends["db"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert services["api"]["ports"] == ["${TVR_PORT:-8000}:8000"]


def test_library_is_mounted_read_only_at_the_same_path_and_data_is_a_volume(compose):
    services = compose["services"]
    for name in ("api", "indexer", "indexer-gpu"):
        volumes = services[name]["volumes"]
        library = [v for v in volumes if ":/videos" in v]
        assert len(library) == 1 and library[0].endswith(":/videos:ro"), f"{name}: {volumes}"
        data = [v for v in volumes if v.endswith(":/data")]
        assert data and data[0].split(":")[0] in compose["volumes"], f"{name}: data volume not declared"
        assert services[name]["environment"]["TVR_DATA_DIR"] == "/data"
    assert compose["services"]["db"]["volumes"][0].split(":")[0] in compose["volumes"]


def test_profiles_and_the_gpu_reservation(compose):
    services = compose["services"]
    assert services["indexer"]["profiles"] == ["ingest"]
    assert services["indexer"]["command"][:3] == ["tvr", "ingest", "/videos"]
    gpu = services["indexer-gpu"]
    assert gpu["profiles"] == ["gpu"] and "--device" in gpu["command"] and "cuda" in gpu["command"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert "api" not in services or "profiles" not in services["api"], "the API starts by default"


def test_every_variable_is_documented_and_secrets_are_required(compose):
    text = (DOCKER / "compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    documented = set(re.findall(r"^(\w+)=", (DOCKER / ".env.example").read_text(), re.MULTILINE))
    assert used - documented == set(), f"not in docker/.env.example: {sorted(used - documented)}"
    for secret in ("POSTGRES_PASSWORD", "TVR_API_KEY", "TVR_VIDEO_DIR"):
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} must be required with ${{{secret}:?...}}"


def test_tvr_variables_set_in_compose_are_settings_the_code_reads(compose):
    from indexer.settings import Settings
    from service.settings import ServiceSettings

    known = {f"TVR_{name.upper()}" for name in {*Settings.model_fields, *ServiceSettings.model_fields}}
    for name, svc in compose["services"].items():
        for variable in svc.get("environment", {}):
            if variable.startswith("TVR_"):
                assert variable in known, f"{name} sets {variable}, which no settings object reads"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists(dockerfile):
    lines = dockerfile.read_text().splitlines()
    copies = [shlex.split(line)[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies, f"{dockerfile.name} copies nothing"
    for sources in copies:
        for source in sources:
            assert not source.startswith("--"), "no COPY flags expected"
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY source {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_install_before_the_code_is_copied_and_run_as_non_root(dockerfile):
    text = dockerfile.read_text()
    first_code_copy = text.index("COPY model")
    assert text.index("pip install") < first_code_copy, "dependencies must be a layer before the code"
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE), "the image must not run as root"
