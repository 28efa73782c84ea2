"""The deployment files, checked without a Docker engine (none runs here).

- the Compose files validate with Debian's ``docker-compose config`` and say what they must (services,
  healthchecks, dependencies, the GPU reservation, the shared store volume, required keys);
- ``promtool`` (Debian's prometheus package) accepts docker/prometheus.yml and every dashboard query;
- every metric the Grafana dashboard queries is one a real API and a real training worker export;
- each Dockerfile's CMD, run natively with the Dockerfile's ENV, answers on the HEALTHCHECK's URL.

``make test`` installs docker-compose and promtool (the Makefile's ``.venv/.tools``): a missing tool
is a failure here, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from packaging.requirements import Requirement
from prometheus_client.parser import text_string_to_metric_families

from models.platform.redisconn import free_port
from models.platform.settings import Settings
from models.platform.store import Store
from tests.conftest import blobs, put_dataset, wait_for, worker_env
from tests.test_jobs import TINY

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's entry points: drawai, and promtool when make put it there
DOCKER = ROOT / "docker"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS = DOCKER / "prometheus.yml"
GRAFANA = DOCKER / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "drawai.json"

SERVICES = {"redis", "api", "worker", "prometheus", "grafana"}
KEYS = "test-key-1,test-key-2"
GPU_METRICS = {"drawai_gpu_memory_used_bytes", "drawai_gpu_memory_total_bytes"}


def tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).is_file() else None)
    assert path, f"{name} is missing: `make test` installs it (the Makefile's .venv/.tools target)"
    return path


# ---------------------------------------------------------------------------------------------- Compose


def compose_variables() -> set[str]:
    """Every variable the Compose files interpolate (``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``)."""
    text = COMPOSE.read_text() + COMPOSE_CPU.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return set(re.findall(r"\$\{(\w+)", "\n".join(lines)))


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out


def compose_config(tmp_path: Path, files: list[Path], values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file F -f ... config``, ``values`` written to F as a ``.env`` would hold them.

    Variables of the Compose files are removed from the process environment (it would win over the file).
    """
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    drop = compose_variables()
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("COMPOSE_")}
    cmd = [tool("docker-compose"), "--env-file", str(env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run([*cmd, "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def filled_env() -> dict[str, str]:
    """.env.example with its required values filled in, as a user's .env."""
    return {**env_example(), "DRAWAI_API_KEYS": KEYS, "GRAFANA_ADMIN_PASSWORD": "test-password"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    r = compose_config(tmp_path_factory.mktemp("compose"), [COMPOSE], filled_env())
    assert r.returncode == 0, r.stderr
    config: dict[str, Any] = yaml.safe_load(r.stdout)
    return config


def started(config: dict[str, Any]) -> dict[str, Any]:
    """The services ``up`` starts: those in no profile (docker-compose v1 lists profiled ones too)."""
    return {name: svc for name, svc in config["services"].items() if not svc.get("profiles")}


def gpu_devices(svc: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = ((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    devices: list[dict[str, Any]] = reservations.get("devices") or []
    return devices


def mounts(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (type, source) of a service's volumes, short ("src:dst:mode") or long syntax."""
    out = {}
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            source, target = v.split(":")[:2]
            kind = "bind" if source.startswith(("/", ".")) else "volume"
        else:
            source, target, kind = v.get("source", ""), v["target"], v.get("type", "volume")
        out[target] = (kind, source)
    return out


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def test_env_example_lists_every_compose_variable_and_leaves_secrets_empty() -> None:
    example = env_example()
    assert compose_variables() - set(example) == set()
    assert example["DRAWAI_API_KEYS"] == "" and example["GRAFANA_ADMIN_PASSWORD"] == ""
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in ENV_EXAMPLE.read_text()
    fields = Settings.model_fields
    for key in example:
        if key.startswith("DRAWAI_") and key != "DRAWAI_PORT":  # DRAWAI_PORT is the host port of compose
            assert key.removeprefix("DRAWAI_").lower() in fields, f"{key} is no Draw.AI setting"


def test_compose_requires_keys_and_grafana_password(tmp_path: Path) -> None:
    r = compose_config(tmp_path, [COMPOSE], env_example())  # .env.example copied without filling it in
    assert r.returncode != 0
    r = compose_config(tmp_path, [COMPOSE], {**filled_env(), "DRAWAI_API_KEYS": ""})
    assert r.returncode != 0 and "set DRAWAI_API_KEYS in .env" in r.stderr, r.stderr
    values = filled_env()
    del values["DRAWAI_API_KEYS"]
    r = compose_config(tmp_path, [COMPOSE], values)
    assert r.returncode != 0 and "set DRAWAI_API_KEYS in .env" in r.stderr, r.stderr
    r = compose_config(tmp_path, [COMPOSE], {**filled_env(), "GRAFANA_ADMIN_PASSWORD": ""})
    assert r.returncode != 0 and "set GRAFANA_ADMIN_PASSWORD in .env" in r.stderr, r.stderr
    r = compose_config(tmp_path, [COMPOSE, COMPOSE_CPU], {**filled_env(), "DRAWAI_API_KEYS": ""})
    assert r.returncode != 0 and "set DRAWAI_API_KEYS in .env" in r.stderr, r.stderr


def test_compose_stack(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert set(services) == SERVICES and set(started(stack)) == SERVICES
    for name, svc in services.items():
        assert svc.get("restart") == "unless-stopped", name

    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"  # acknowledged jobs survive a crash
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert mounts(redis)["/data"][0] == "volume" and mounts(redis)["/data"][1] in stack["volumes"]

    api, worker = services["api"], services["worker"]
    for svc in (api, worker):
        assert depends_on(svc)["redis"] == "service_healthy"
        assert svc["build"]["context"] == str(ROOT)
        assert (ROOT / svc["build"]["dockerfile"]).is_file()
        assert svc["environment"]["DRAWAI_REDIS_URL"] == "redis://redis:6379/0"
        assert svc["environment"]["DRAWAI_HOME"] == "/data"
        assert mounts(svc)["/data"] == ("volume", "drawai-home")
        for key in svc["environment"]:
            assert key.removeprefix("DRAWAI_").lower() in Settings.model_fields, f"{key} is no Draw.AI setting"
    assert "drawai-home" in stack["volumes"]
    assert api["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    assert api["environment"]["DRAWAI_API_KEYS"] == KEYS
    assert [(str(p["published"]), str(p["target"])) for p in api["ports"]] == [("8000", "8000")]

    # The GPU goes where training happens: the worker, and only it.
    [gpu] = gpu_devices(worker)
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"] and int(gpu["count"]) == 1
    assert not any(gpu_devices(svc) for name, svc in services.items() if name != "worker")
    assert "worker" in worker["networks"]["default"]["aliases"]  # what Prometheus discovers
    assert worker["environment"]["DRAWAI_WORKER_METRICS_PORT"] == "9100"

    # Config files mounted from the repository exist there.
    prometheus, grafana = services["prometheus"], services["grafana"]
    kind, source = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert kind == "bind" and Path(source) == PROMETHEUS and PROMETHEUS.is_file()
    kind, source = mounts(grafana)["/etc/grafana/provisioning"]
    assert kind == "bind" and Path(source) == GRAFANA / "provisioning"
    assert sorted(p.name for p in (GRAFANA / "provisioning").rglob("*.yml")) == ["drawai.yml", "prometheus.yml"]
    kind, source = mounts(grafana)["/etc/grafana/dashboards"]
    assert kind == "bind" and Path(source) == DASHBOARD.parent and DASHBOARD.is_file()
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "test-password"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/" + DASHBOARD.name
    # Prometheus has no authentication: published on the host's loopback only. Redis is not published.
    assert "ports" not in services["redis"]
    for p in prometheus["ports"]:  # "127.0.0.1:9090:9090/tcp" (compose v1) or {host_ip: 127.0.0.1, ...} (v2)
        assert p.startswith("127.0.0.1:") if isinstance(p, str) else p.get("host_ip") == "127.0.0.1", p


def test_compose_cpu_override(tmp_path: Path, stack: dict[str, Any]) -> None:
    r = compose_config(tmp_path, [COMPOSE, COMPOSE_CPU], filled_env())
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    up = started(config)
    assert set(up) == SERVICES - {"worker"} | {"worker-cpu"}
    assert not any(gpu_devices(svc) for svc in up.values())
    # worker-cpu is the GPU worker without the GPU: same settings, store, dependencies and network alias.
    gpu_worker, cpu_worker = stack["services"]["worker"], up["worker-cpu"]
    for key in ("volumes", "depends_on", "networks", "restart", "init"):
        assert cpu_worker.get(key) == gpu_worker.get(key), key
    assert cpu_worker["build"]["dockerfile"] == gpu_worker["build"]["dockerfile"]
    assert cpu_worker["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert {**cpu_worker["environment"], "DRAWAI_DEVICE": "auto"} == gpu_worker["environment"]
    assert cpu_worker["environment"]["DRAWAI_DEVICE"] == "cpu"
    # The documented command is at the top of both files.
    command = "docker compose -f docker-compose.yml -f docker-compose.cpu.yml up"
    assert command in COMPOSE.read_text() and command in COMPOSE_CPU.read_text()


def test_dockerignore_keeps_secrets_and_state_out_of_images() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", ".env", "drawai-home", "drawai-demo", "**/__pycache__"} <= ignored
    for needed in ("models", "service", "worker", "drawai", "pyproject.toml", "README.md"):
        assert needed not in ignored and (ROOT / needed).exists()


# ------------------------------------------------------------------------------------ Prometheus, Grafana


def test_promtool_accepts_prometheus_config() -> None:
    r = subprocess.run(
        [tool("promtool"), "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_prometheus_scrapes_api_and_workers(stack: dict[str, Any]) -> None:
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    api, worker = jobs["drawai-api"], jobs["drawai-worker"]
    assert api["static_configs"] == [{"targets": ["api:8000"]}] and api.get("metrics_path", "/metrics") == "/metrics"
    [dns] = worker["dns_sd_configs"]
    assert dns["names"] == ["worker"] and dns["type"] == "A"
    assert str(dns["port"]) == stack["services"]["worker"]["environment"]["DRAWAI_WORKER_METRICS_PORT"]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def dashboard_metric_names() -> set[str]:
    return {name for expr in dashboard_queries() for name in re.findall(r"\bdrawai_[a-z_]+", expr)}


def test_grafana_provisioning_and_dashboard(tmp_path: Path, stack: dict[str, Any]) -> None:
    [source] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["uid"]
    [provider] = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "drawai.yml").read_text())["providers"]
    assert provider["type"] == "file"
    assert mounts(stack["services"]["grafana"])[provider["options"]["path"]][1] == str(DASHBOARD.parent)

    board = dashboard()
    assert board["uid"] == "drawai" and board["title"] and isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": source["uid"]}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip() and t["refId"]
    wanted = {
        "drawai_http_requests_total", "drawai_http_request_duration_seconds_bucket", "drawai_images_generated_total",
        "drawai_queue_depth", "drawai_jobs", "drawai_workers", "drawai_training_progress_ratio",
        "drawai_training_epoch", "drawai_training_loss", "drawai_training_images_per_second",
        "drawai_job_duration_seconds_bucket", *GPU_METRICS,
    }  # fmt: skip
    assert wanted <= dashboard_metric_names()

    # Every query is valid PromQL: promtool parses them as recording rules.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(dashboard_queries())
    ]}]}  # fmt: skip
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    r = subprocess.run(
        [tool("promtool"), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, r.stdout + r.stderr


def exported_names(text: str) -> set[str]:
    """Names of the series a /metrics text offers: each family with its type's sample suffixes."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def scrape(url: str) -> str:
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return ""
    return r.text if r.status_code == 200 else ""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> int | None:
    """SIGTERM the process group, wait; SIGKILL what is left. Returns the exit code of a clean stop."""
    code = None
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return code


def test_dashboard_queries_only_exported_metrics(
    model_version: str, client: TestClient, store: Store, settings: Settings, tmp_path: Path
) -> None:
    """Scrape a real API serving a model and a real worker training a job: the dashboard queries nothing else."""
    wanted = dashboard_metric_names()
    r = client.post("/generate", params={"count": 2, "seed": 0, "format": "npy"})
    assert r.status_code == 200, r.text  # request, generation and inference metrics now have series
    exported = exported_names(client.get("/metrics").text)

    port = free_port()
    ds = put_dataset(store, blobs(32))
    job = client.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 200})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    env = {**worker_env(settings), "DRAWAI_WORKER_METRICS_PORT": str(port)}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BIN / "drawai"), "worker"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: "drawai_training_step{" in scrape(url), 240, "the running job's training gauges")
        # Each gauge appears once the work horse has reported its value: scrape while the job runs.
        training = {name for name in wanted if name.startswith("drawai_training_")}
        deadline, last = time.monotonic() + 60, ""
        while not training <= exported and time.monotonic() < deadline:
            exported |= exported_names(last := scrape(url) or last)
            time.sleep(0.2)
        assert client.get(f"/jobs/{job_id}").json()["status"] == "started"
        assert client.delete(f"/jobs/{job_id}").status_code == 202
        ended = 'drawai_job_duration_seconds_count{outcome="canceled"} 1.0'
        exported |= exported_names(wait_for(lambda: ended in (t := scrape(url)) and t, 120, "the job's duration"))
    finally:
        stop(worker)
        log.close()
    assert client.get(f"/jobs/{job_id}").json()["status"] == "canceled"

    missing = wanted - exported
    if missing & GPU_METRICS:
        # The worker exports GPU memory only where NVML finds an NVIDIA GPU. Exempt only without one.
        assert shutil.which("nvidia-smi") is None, "a GPU is present: the worker must export GPU memory"
        missing -= GPU_METRICS
    seen = "\n".join(line for line in last.splitlines() if line.startswith("drawai_training_"))
    assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}; the worker's last:\n{seen}"


# ---------------------------------------------------------------------------------------------- Dockerfiles


@dataclass
class Dockerfile:
    instructions: list[tuple[str, str]]
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)
    healthcheck: str = ""
    user: str = ""
    expose: list[str] = field(default_factory=list)

    def runs(self) -> list[str]:
        return [rest for op, rest in self.instructions if op == "RUN"]


def parse_dockerfile(path: Path) -> Dockerfile:
    """The instructions (continuations joined, comments dropped), ARG defaults, ENV, exec-form CMD, HEALTHCHECK."""
    instructions, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and buf):  # comment lines may sit inside a continuation too
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line = (buf + line).strip()
        buf = ""
        if line:
            op, _, rest = line.partition(" ")
            instructions.append((op.upper(), rest.strip()))
    assert not buf, f"{path.name}: dangling continuation"
    df = Dockerfile(instructions)
    for op, rest in instructions:
        if op == "ARG":
            name, _, default = rest.partition("=")
            df.args[name] = shlex.split(default)[0] if default else ""
        elif op == "ENV":
            tokens = shlex.split(rest)
            if "=" not in tokens[0]:  # legacy form: ENV KEY value with spaces
                df.env[tokens[0]] = " ".join(tokens[1:])
            else:
                for token in tokens:
                    key, sep, value = token.partition("=")
                    assert sep, f"{path.name}: ENV {token!r}"
                    df.env[key] = value
        elif op == "CMD":
            df.cmd = json.loads(rest)  # exec form only: a JSON array (signals reach the process)
        elif op == "HEALTHCHECK":
            df.healthcheck = rest
        elif op == "USER":
            df.user = rest
        elif op == "EXPOSE":
            df.expose += rest.split()
    return df


def snippet_requirements(df: Dockerfile) -> list[str]:
    """Run the Dockerfile's ``python -c "...tomllib..." [ARGS]`` (its requirements list) natively, from the repo."""
    for run in df.runs():
        tokens = shlex.split(run)
        for i in range(len(tokens) - 2):
            if tokens[i] == "python" and tokens[i + 1] == "-c" and "tomllib" in tokens[i + 2]:
                args = []
                for token in tokens[i + 3 :]:
                    if token in (">", "&&", "|", ";"):
                        break
                    args.append(re.sub(r"\$(\w+)", lambda m: df.args[m.group(1)], token))
                out = subprocess.run([sys.executable, "-c", tokens[i + 2], *args], cwd=ROOT, capture_output=True)
                assert out.returncode == 0, out.stderr.decode()
                return out.stdout.decode().split()
    raise AssertionError("no requirements snippet in the Dockerfile")


def test_api_image_installs_core_dependencies_with_onnxruntime_gpu() -> None:
    df = parse_dockerfile(DOCKER / "api.Dockerfile")
    reqs = [Requirement(line) for line in snippet_requirements(df)]
    names = [r.name for r in reqs]
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names and "torch" not in names
    assert "openvino" in names  # the CPU engine (service/engines), reading the same ONNX file
    assert {"cuda", "cudnn"} <= next(r for r in reqs if r.name == "onnxruntime-gpu").extras
    assert len(reqs) == len(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert any("pip install" in run and "--no-deps ." in run for run in df.runs())
    assert any('python -c "import torch"' in run and "exit 1" in run for run in df.runs())  # the build fails with torch


def test_worker_image_installs_pinned_torch_and_train_extra() -> None:
    df = parse_dockerfile(DOCKER / "worker.Dockerfile")
    reqs = {Requirement(line).name: Requirement(line) for line in snippet_requirements(df)}
    assert str(reqs["torch"].specifier) == "==2.13.0"
    assert {"onnx", "openvino", "scikit-learn", "matplotlib"} <= set(reqs)
    assert any('"torch==2.13.0"' in run and '--index-url "$TORCH_INDEX_URL"' in run for run in df.runs())


@pytest.mark.parametrize("image", ["api", "worker"])
def test_dockerfile_command_answers_on_its_healthcheck(image: str, redis_url: str, redis: Any, tmp_path: Path) -> None:
    """The image's CMD with the image's ENV, run natively (same entry point), answers its HEALTHCHECK URL."""
    df = parse_dockerfile(DOCKER / f"{image}.Dockerfile")
    assert df.user and df.user not in ("root", "0")
    assert any("useradd --uid 10001" in run for run in df.runs())  # one uid for both images: a shared volume
    assert df.env["DRAWAI_HOME"] == "/data" and any("mkdir -p /data" in run for run in df.runs())
    assert df.cmd[0] == "drawai"
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", df.healthcheck)
    assert match, df.healthcheck
    image_port, path = match.group(1), match.group(2)
    assert df.expose == [image_port]

    port = str(free_port())
    root = tmp_path / "image"  # the image's absolute paths, under a temp folder
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAWAI_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    for key, value in df.env.items():
        assert "$" not in value, f"{key}={value}: expansion is not emulated"
        if value.startswith("/"):
            value = str(root / value.lstrip("/"))
            Path(value).parent.mkdir(parents=True, exist_ok=True)
        env[key] = port if value == image_port else value
    Path(env["DRAWAI_HOME"]).mkdir(parents=True, exist_ok=True)  # the Dockerfile's mkdir -p /data
    env["DRAWAI_REDIS_URL"] = redis_url
    if image == "api":
        env["DRAWAI_API_KEYS"] = KEYS  # it listens on 0.0.0.0: keys are required (compose requires them too)
    cmd = [str(BIN / "drawai"), *(port if arg == image_port else arg for arg in df.cmd[1:])]
    assert port in cmd or port in env.values(), "the health port is set neither by CMD nor by ENV"

    log_path = tmp_path / f"{image}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, f"{cmd} exited {proc.returncode}:\n{log_path.read_text()}"
            try:
                return httpx.get(url + path, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, f"{url}{path} to answer 200")
        metrics = httpx.get(url + "/metrics", timeout=10)  # what Prometheus scrapes on the same port
        assert metrics.status_code == 200 and "drawai_" in metrics.text
        t0 = time.monotonic()
        code = stop(proc)
        assert code == 0, f"{image} did not stop cleanly on SIGTERM (exit {code}):\n{log_path.read_text()}"
        assert time.monotonic() - t0 < 30
        wait_for(lambda: not group_alive(proc.pid), 10, "its process group to end")  # nothing left behind
    finally:
        stop(proc, timeout=5)
        log.close()
