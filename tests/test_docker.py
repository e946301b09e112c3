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
COMPOSE = DOCKER / "compose.yml"
COMPOSE_RAY = DOCKER / "compose.ray.yml"  # given after COMPOSE: docker compose -f compose.yml -f compose.ray.yml
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
URL_PATH = re.compile(r"http://(?:127\.0\.0\.1|localhost):8000(/[\w/-]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def ray_compose() -> dict:
    return yaml.safe_load(COMPOSE_RAY.read_text())


@pytest.fixture(scope="module")
def merged(compose, ray_compose) -> dict:
    """The two files as ``docker compose -f compose.yml -f compose.ray.yml`` sees them. The Ray file only adds
    services (checked below), so Compose's merge is their union here."""
    return {**compose, "services": {**compose["services"], **ray_compose["services"]}}


def _served(path: str) -> bool:
    """True when the app has a GET route at ``path`` (not loaded: it may answer 503, but not 404/405)."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    return TestClient(create_app()).get(path).status_code not in (404, 405)


def _tvr_commands(compose: dict) -> list[list[str]]:
    """Every ``tvr`` command line: compose commands, the images' CMD, what ``ray job submit`` runs after
    ``--``, and the KubeRay job's entrypoint."""
    commands = [svc["command"] for svc in compose["services"].values() if "command" in svc]
    commands += [c[c.index("--") + 1 :] for c in list(commands) if c[:3] == ["ray", "job", "submit"] and "--" in c]
    for dockerfile in DOCKERFILES:
        cmd = re.search(r"^CMD (\[.*\])$", dockerfile.read_text(), re.MULTILINE)
        assert cmd, f"{dockerfile.name} has no exec-form CMD"
        commands.append(yaml.safe_load(cmd.group(1)))
    commands.append(shlex.split(_rayjob()["spec"]["entrypoint"]))
    return [c for c in commands if c and c[0] == "tvr"]


def test_every_command_is_a_real_tvr_command_with_real_options(merged):
    commands = _tvr_commands(merged)
    assert {tuple(c[:2]) for c in commands} >= {("tvr", "serve"), ("tvr", "ingest"), ("tvr", "db")}
    runner = CliRunner()
    for command in commands:
        # --help is eager, but an unknown option or sub-command still fails while parsing.
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{shlex.join(command)}: {result.output}"


def test_health_checks_point_at_real_routes(merged):
    checks = [" ".join(svc["healthcheck"]["test"]) for svc in merged["services"].values() if "healthcheck" in svc]
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


def _required(path: Path) -> set[str]:
    """The variables Compose refuses to run without when it interpolates ``path`` (``${VAR:?...}``)."""
    return set(re.findall(r"\$\{(\w+):\?", path.read_text()))


def test_every_variable_is_documented_and_secrets_are_required():
    documented = set(re.findall(r"^(\w+)=", (DOCKER / ".env.example").read_text(), re.MULTILINE))
    for path in (COMPOSE, COMPOSE_RAY):
        used = set(re.findall(r"\$\{(\w+)", path.read_text()))
        assert used - documented == set(), f"{path.name}, not in docker/.env.example: {sorted(used - documented)}"
    secrets = {"POSTGRES_PASSWORD", "TVR_API_KEY", "TVR_VIDEO_DIR"}
    assert _required(COMPOSE) == secrets, (
        "compose.yml alone requires exactly the catalog's, the API's and the library's"
    )
    assert _required(COMPOSE_RAY) == secrets | {"RAY_AUTH_TOKEN"}, "the Ray file also requires the cluster's token"


def test_the_main_compose_file_interpolates_with_no_ray_variable_set():
    # Compose interpolates a whole file before applying profiles: a Ray variable in compose.yml, even in a
    # profile's service, would be needed by every command, those of users who never run Ray included.
    text = COMPOSE.read_text()
    assert not re.search(r"\$\{?RAY_", text), "compose.yml must interpolate with no RAY_* variable set"
    assert "RAY_AUTH_TOKEN" not in str(yaml.safe_load(text)), "the token belongs to compose.ray.yml"
    assert RAY_TOKEN_REQUIRED.search(COMPOSE_RAY.read_text()), "compose.ray.yml requires RAY_AUTH_TOKEN"


def test_the_ray_file_only_adds_services_and_repeats_the_main_files_settings(compose, ray_compose):
    assert set(ray_compose["services"]).isdisjoint(compose["services"]), "the Ray file overrides no service"
    assert set(ray_compose) - {"services"} == {
        "x-tvr-environment",
        "x-ray-auth",
        "x-ray-node-environment",
        "x-tvr-image",
    }
    # YAML anchors do not cross files: what the Ray file repeats must stay what compose.yml says.
    assert ray_compose["x-tvr-image"] == compose["x-tvr-image"]
    indexer = {k: v for k, v in compose["services"]["indexer"]["environment"].items() if k != "TVR_DEVICE"}
    assert ray_compose["x-tvr-environment"] == indexer == compose["x-tvr-environment"]
    for name, svc in ray_compose["services"].items():
        assert svc.get("profiles"), f"{name}: a plain `up -d` with the Ray file must not start it"


def test_tvr_variables_set_in_compose_are_settings_the_code_reads(merged):
    from indexer.settings import Settings
    from service.settings import ServiceSettings

    known = {f"TVR_{name.upper()}" for name in {*Settings.model_fields, *ServiceSettings.model_fields}}
    for name, svc in merged["services"].items():
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


# Ingestion on Ray (docker/compose.ray.yml's profiles ray and ray-gpu, docker/kuberay/rayjob.yaml).

RAYJOB = DOCKER / "kuberay" / "rayjob.yaml"
RAY_NODES = ("ray-head", "ray-worker", "ray-worker-gpu")
GPU_GROUP = re.compile(r"^\s*# BEGIN gpu-worker-group\n(.*?)^\s*# END gpu-worker-group$", re.MULTILINE | re.DOTALL)


def _rayjob(with_gpu_group: bool = False) -> dict:
    """The KubeRay manifest; ``with_gpu_group`` uncomments its GPU worker group as the comment says to."""
    text = RAYJOB.read_text()
    if with_gpu_group:
        block = GPU_GROUP.search(text)
        assert block, "rayjob.yaml has no GPU worker group between BEGIN and END markers"
        text = text.replace(block.group(1), re.sub(r"^(\s*)# ", r"\1", block.group(1), flags=re.MULTILINE))
    return yaml.safe_load(text)


def _pods(rayjob: dict) -> dict[str, dict]:
    """The pod spec of the head and of every worker group, by group name."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def _default(value: str) -> str:
    """A compose string with each ``${VAR:-default}`` replaced by its default (what runs without .env)."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    assert "${" not in value, f"{value}: a command may only use ${{VAR:-default}}"
    return value


def _options(command: list[str]) -> dict[str, str | bool]:
    """``--name=value`` options and ``--flag``s of a compose ``ray`` command, up to ``--``."""
    args = command[: command.index("--")] if "--" in command else command
    options: dict[str, str | bool] = {}
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            options[name] = _default(value) if eq else True
    return options


def _ray_extra_pin() -> str:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "ray" in extras, "pyproject.toml has no `ray` extra"
    pins = [re.fullmatch(r"ray(\[[\w,]+\])?==([\w.]+)", req.replace(" ", "")) for req in extras["ray"]]
    assert len(pins) == 1 and pins[0], f"the `ray` extra must pin ray exactly once: {extras['ray']}"
    return pins[0].group(2)


def _active(compose: dict, profiles: set[str]) -> set[str]:
    return {
        name for name, svc in compose["services"].items() if not svc.get("profiles") or profiles & set(svc["profiles"])
    }


@pytest.mark.parametrize("profiles", [(), ("ingest",), ("gpu",), ("ray",), ("ray-gpu",), ("ray", "ray-gpu")])
@pytest.mark.parametrize("with_ray_file", [False, True], ids=["compose.yml", "with-compose.ray.yml"])
def test_every_profile_has_the_services_its_services_depend_on(compose, merged, profiles, with_ray_file):
    # Compose refuses a depends_on pointing at a service no active profile enables (or no file defines).
    files = merged if with_ray_file else compose
    active = _active(files, set(profiles))
    for name in active:
        missing = set(files["services"][name].get("depends_on", {})) - active
        assert not missing, f"with profiles {profiles}, {name} depends on {sorted(missing)}, which are off"
    if with_ray_file and profiles:
        ray = {
            "ray": {"ray-head", "ray-worker", "indexer-ray"},
            "ray-gpu": {"ray-head", "ray-worker-gpu", "indexer-ray"},
        }
        assert active >= set().union(*(ray.get(p, set()) for p in profiles)), profiles
    assert {"db", "migrate", "api"} <= active


def test_ray_workers_join_the_head_and_the_job_is_submitted_to_its_job_server(merged):
    services = merged["services"]
    head = services["ray-head"]["command"]
    assert head[:2] == ["ray", "start"], head
    options = _options(head)
    assert options.get("head") is True and options.get("block") is True, head
    assert options.get("dashboard-host") == "0.0.0.0", "the job server must listen beyond the head's loopback"
    port, dashboard = options.get("port", "6379"), options.get("dashboard-port", "8265")
    assert "num-cpus" in options and int(str(options["num-cpus"])) >= 0, "say what work the head takes"
    for name in ("ray-worker", "ray-worker-gpu"):
        command = services[name]["command"]
        assert command[:2] == ["ray", "start"] and _options(command).get("block") is True, name
        assert _options(command).get("address") == f"ray-head:{port}", f"{name} must join ray-head's port {port}"
        assert "ports" not in services[name], f"{name} must publish no port, or --scale {name}=N collides"
    submit = services["indexer-ray"]["command"]
    assert submit[:3] == ["ray", "job", "submit"], submit
    assert _options(submit).get("address") == f"http://ray-head:{dashboard}", "submit to the head's job server"
    assert "no-wait" not in _options(submit), "the one-shot service follows the job and exits with its result"
    entrypoint = submit[submit.index("--") + 1 :]
    assert entrypoint[:3] == ["tvr", "ingest", "/videos"] and "--ray" in entrypoint, entrypoint
    assert " ".join(entrypoint[entrypoint.index("--ray-address") :][:2]) == "--ray-address auto", entrypoint
    healthcheck = " ".join(services["ray-head"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{dashboard}/api/gcs_healthz" in healthcheck, healthcheck
    published = [_default(p) for p in services["ray-head"]["ports"]]
    assert published == [f"127.0.0.1:8265:{dashboard}"], "the job server runs any command: publish it on loopback"


def test_ray_commands_are_real_ray_commands_with_real_options(merged):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import click
    from ray.scripts.scripts import cli

    commands = [svc["command"] for svc in merged["services"].values() if svc.get("command", [""])[0] == "ray"]
    assert len(commands) == 4, commands
    head_params = _rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    commands.append(["ray", "start", "--head", *(f"--{k}={v}" for k, v in head_params.items())])
    for group in _rayjob(with_gpu_group=True)["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        params = group.get("rayStartParams") or {}
        commands.append(["ray", "start", "--address=head:6379", *(f"--{k}={v}" for k, v in params.items())])
    for command in commands:
        resolved: click.Command = cli
        args = [_default(a) for a in command[1:]]
        while isinstance(resolved, click.Group):
            resolved, args = resolved.commands[args[0]], args[1:]
        # Parsing converts every value (an unknown option or a bad integer raises) and runs nothing.
        resolved.make_context(command[1], args)
    import ray.dashboard.http_server_head as dashboard

    # The head's health check sends no token: its route must be one Ray leaves open under token auth.
    public = re.search(r"public_exact_paths = \{(.*?)\}", Path(dashboard.__file__).read_text(), re.DOTALL)
    assert public, "Ray's dashboard has no list of routes open without the token: check the health check"
    assert '"/api/gcs_healthz"' in public.group(1), "the head's health check needs the token: send it"


def test_ray_nodes_mount_the_library_read_only_where_the_api_does_with_the_indexers_settings(merged):
    services = merged["services"]
    api_library = [v for v in services["api"]["volumes"] if ":/videos" in v]
    for name in RAY_NODES:
        library = [v for v in services[name]["volumes"] if ":/videos" in v]
        assert library == api_library, f"{name}: {library} (the catalog records paths the API must open)"
        assert library[0].endswith(":/videos:ro"), name
        assert services[name].get("shm_size"), f"{name}: Ray's object store needs more than 64 MB of /dev/shm"
        indexer = {k: v for k, v in services["indexer"]["environment"].items() if k != "TVR_DEVICE"}
        tvr = {k: v for k, v in services[name]["environment"].items() if k.startswith("TVR_")}
        assert tvr == indexer, f"{name} must read the catalog and checkpoint as the indexer"
    # The driver runs on the head: a TVR_DEVICE there would be every encoder's, cpu even beside GPU workers.
    assert "TVR_DEVICE" not in services["ray-head"]["environment"]
    # The head's data volume is the one compose.yml declares (the Ray file declares none of its own).
    data = [v.split(":")[0] for v in services["ray-head"]["volumes"] if v.endswith(":/data")]
    assert data and data[0] in merged["volumes"], f"ray-head: {data} is not a volume of compose.yml"


def test_ray_services_start_after_the_database_the_migrations_and_a_healthy_head(merged):
    services = merged["services"]
    for name in RAY_NODES:
        depends = services[name]["depends_on"]
        assert depends["db"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("ray-worker", "ray-worker-gpu", "indexer-ray"):
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy", name
    assert services["indexer-ray"]["restart"] == "no"


def test_ray_profiles_and_the_gpu_workers_reservation(merged):
    services = merged["services"]
    assert services["ray-worker"]["profiles"] == ["ray"]
    gpu = services["ray-worker-gpu"]
    assert gpu["profiles"] == ["ray-gpu"] and gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert gpu["image"] == services["indexer-gpu"]["image"], "the GPU worker runs the CUDA image"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("ray-head", "ray-worker", "indexer-ray"):
        assert services[name]["image"] == services["api"]["image"], f"{name} runs the API's image"


def test_ray_is_pinned_once_and_every_image_and_cluster_runs_that_version():
    version = _ray_extra_pin()
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert not re.search(r"ray[\[\w,\]]*==", text), f"{dockerfile.name} pins Ray itself: pyproject does"
        extras = re.search(r"^ARG TVR_EXTRAS=([\w,]+)$", text, re.MULTILINE)
        assert extras and "ray" in extras.group(1).split(","), f"{dockerfile.name} must install the ray extra"
        assert '".[${TVR_EXTRAS}]"' in text, f"{dockerfile.name} does not install TVR_EXTRAS"
    assert _rayjob()["spec"]["rayClusterSpec"]["rayVersion"] == version


def test_both_images_run_python_3_11_and_ray_accepts_their_patch_releases():
    cpu, cuda = (f.read_text() for f in DOCKERFILES)
    assert re.search(r"^FROM python:3\.11[-.]", cpu, re.MULTILINE), "the CPU image's Python"
    assert re.search(r"apt-get install .*\bpython3\.11\b", cuda) and "python3.11 -m venv" in cuda
    for text in (cpu, cuda):
        # Debian's and Ubuntu's 3.11 differ in the patch release, which Ray refuses by default.
        assert "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor" in text
        assert re.search(r"apt-get install .*\bwget\b", text), "KubeRay's default probes call wget"
        assert "/tmp/ray" not in text.split("USER")[0].replace("# ", ""), "root must not own Ray's temp dir"


def test_kuberay_rayjob_runs_tvr_ingest_on_every_pod_with_the_library_and_the_catalog(compose):
    assert _rayjob() == yaml.safe_load(RAYJOB.read_text())
    rayjob = _rayjob(with_gpu_group=True)
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert shlex.split(spec["entrypoint"])[:4] == ["tvr", "ingest", "/videos", "--ray"]
    assert spec["shutdownAfterJobFinishes"] is True
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu", "gpu"]
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    cpu_image = _default(compose["x-tvr-image"]["image"])
    cuda_image = _default(compose["services"]["indexer-gpu"]["image"])
    for name, pod in _pods(rayjob).items():
        (container,) = pod["containers"]
        expected = cuda_image if name == "gpu" else cpu_image
        assert container["image"].rsplit("/", 1)[-1] == expected, f"{name}: {container['image']} is not {expected}"
        env = {e["name"]: e for e in container["env"]}
        assert env["TVR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"], f"{name}: the catalog URL is a Secret"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/videos"].get("readOnly") is True, f"{name}: the library is mounted read-only at /videos"
        volumes = {v["name"]: v for v in pod["volumes"]}
        claim = volumes[mounts["/videos"]["name"]]["persistentVolumeClaim"]
        assert claim["claimName"] == "tvr-videos" and claim.get("readOnly") is True, name
        assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory", f"{name}: object store"
    gpu = _pods(rayjob)["gpu"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    head_env = {e["name"] for e in _pods(rayjob)["head"]["containers"][0]["env"]}
    assert "TVR_DEVICE" not in head_env, "the driver's TVR_DEVICE would be every encoder's, even on GPU workers"


# Ray's token authentication: every node and every client of a cluster (RAY_AUTH_MODE=token, one token).

RAY_TOKEN_REQUIRED = re.compile(r"\$\{RAY_AUTH_TOKEN:\?[^}]+\}")
SECRET_CREATED = re.compile(r"kubectl create secret generic ([\w-]+)((?:\s+--from-literal=[\w-]+=\S+)+)")


def test_every_ray_service_of_compose_authenticates_with_the_required_token(compose, ray_compose, merged):
    services = merged["services"]
    ray_services = {name for name, svc in services.items() if svc.get("command", [""])[0] == "ray"}
    assert ray_services == {*RAY_NODES, "indexer-ray"}, "a Ray node or client this test does not know of"
    assert ray_services == set(ray_compose["services"]), "every Ray service, and only they, in compose.ray.yml"
    for name in ray_services:
        env = services[name].get("environment", {})
        assert env.get("RAY_AUTH_MODE") == "token", f"{name}: Ray runs without authentication"
        assert RAY_TOKEN_REQUIRED.fullmatch(str(env.get("RAY_AUTH_TOKEN"))), f"{name}: the token is ${{...:?...}}"
        assert "RAY_AUTH_TOKEN_PATH" not in env, f"{name}: one source of the token for every node"
    for name in set(services) - ray_services:
        env = services[name].get("environment", {})
        assert not any(k.startswith("RAY_AUTH") for k in env), f"{name} is not a Ray node: no token for it"


def test_env_example_documents_the_ray_token_without_a_default():
    lines = (DOCKER / ".env.example").read_text().splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith("RAY_AUTH_TOKEN=")]
    assert lines[index] == "RAY_AUTH_TOKEN=", "no token in the example: each deployment makes its own"
    comment = []
    for line in reversed(lines[:index]):
        if not line.startswith("#"):
            break
        comment.insert(0, line)
    text = " ".join(comment)
    for needed in ("Required", "compose.ray.yml", "openssl rand", "RAY_AUTH_MODE=token", "ray job"):
        assert needed in text, f"docker/.env.example: say {needed!r} about RAY_AUTH_TOKEN"


def _auth(name: str, container: dict) -> tuple[str, str]:
    """The Secret name and key a KubeRay container's RAY_AUTH_TOKEN comes from, once RAY_AUTH_MODE is token."""
    env = {e["name"]: e for e in container.get("env", [])}
    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name}: RAY_AUTH_MODE=token"
    assert "value" not in env.get("RAY_AUTH_TOKEN", {}), f"{name}: the token comes from a Secret, not the file"
    ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    assert ref.get("name") and ref.get("key"), f"{name}: RAY_AUTH_TOKEN from a Secret"
    assert "RAY_AUTH_TOKEN_PATH" not in env, f"{name}: one source of the token for every pod"
    return ref["name"], ref["key"]


def test_kuberay_every_pod_and_the_submitter_authenticate_with_one_secret():
    rayjob = _rayjob(with_gpu_group=True)
    refs = {name: _auth(name, pod["containers"][0]) for name, pod in _pods(rayjob).items()}
    assert set(refs) == {"head", "cpu", "gpu"}
    # KubeRay's default submitter pod has no environment: `ray job submit` needs the token too.
    submitter = rayjob["spec"].get("submitterPodTemplate", {}).get("spec")
    assert submitter, "the RayJob needs a submitterPodTemplate that carries the token"
    assert submitter["restartPolicy"] == "Never"
    container = submitter["containers"][0]  # KubeRay takes the first container as the submitter
    assert "command" not in container, "KubeRay fills in the `ray job submit` command when there is none"
    head = _pods(rayjob)["head"]["containers"][0]
    assert container["image"] == head["image"], "the submitter runs the head's image (the same Ray)"
    refs["submitter"] = _auth("submitter", container)
    assert len(set(refs.values())) == 1, f"every pod must read the same token: {refs}"
    # The Secret is listed among what to create first, with that key.
    ((secret, key),) = set(refs.values())
    created = {m.group(1): m.group(2) for m in SECRET_CREATED.finditer(RAYJOB.read_text().replace("\\\n#", ""))}
    assert secret in created, f"rayjob.yaml's comments must say to create the Secret {secret}"
    assert f"--from-literal={key}=" in created[secret], f"the Secret {secret} needs the key {key}"
