"""The generated project's deployment files: the Kubernetes manifests of deploy/kubernetes
(a kustomize base and two overlays), the CI workflow and the pre-commit configuration.

Offline, with the tools the project pins (deploy/requirements.txt, which requirements.txt
includes) and the machine's kubectl: each overlay rendered by `kubectl kustomize`, validated by
`kubernetes-validate --strict` against the oldest and newest Kubernetes the workflow names,
scanned by checkov (no failed check; every skip with its reason), linted by yamllint; the
workflow linted by actionlint. The workflow's jobs are run here step by step (every `run:`
step, in the baked project), so CI and these tests run the same commands. Then what the
manifests must say for the service to work: probes, drain, workers, migrations, secrets.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES_DIR, TEMPLATE_DIR, bake, cannot_run_here

from service_validator.server import shell_environment
from service_validator.static_checks import SECRET_PATTERNS

BIN = Path(sys.executable).parent
WORKFLOW = Path(".github/workflows/ci.yml")
OVERLAYS = ("development", "production")
# Every kind an overlay renders.
KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Job",
}
# The checkov checks a manifest may skip (with its reason in a checkov.io/skipN annotation).
ALLOWED_SKIPS = {
    # Both overlays: the service reads DATABASE_URL and API_KEYS from its environment only.
    "CKV_K8S_35",
    # Development only: an image built locally, loaded into a local cluster, tagged dev.
    "CKV_K8S_15",
    "CKV_K8S_43",
}
DEVELOPMENT_ONLY_SKIPS = {"CKV_K8S_15", "CKV_K8S_43"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123, at most 63 characters
LABEL_NAMED = {"Namespace", "Service", "Job"}
DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# `uses:` steps of the workflow and what stands for each here.
SETUP_ACTIONS = {
    "actions/checkout": "the baked project is the checkout",
    "actions/setup-python": "this interpreter's virtualenv, first on PATH",
    "azure/setup-kubectl": "the machine's kubectl",
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        cannot_run_here("kubectl (with kustomize) is not installed on this machine")
    return path


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**shell_environment(), **kwargs.pop("env", {})}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def render(project: Path, overlay: str) -> str:
    result = run([kubectl(), "kustomize", f"deploy/kubernetes/overlays/{overlay}"], project)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(project: Path, overlay: str) -> dict[tuple[str, str], dict]:
    """An overlay's resources by (kind, name)."""
    return {
        (document["kind"], document["metadata"]["name"]): document
        for document in yaml.safe_load_all(render(project, overlay))
    }


def one(resources: dict, kind: str) -> dict:
    (found,) = [document for (k, _), document in resources.items() if k == kind]
    return found


def container(resources: dict, kind: str) -> dict:
    (found,) = one(resources, kind)["spec"]["template"]["spec"]["containers"]
    return found


def env_of(container: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def config_map_of(resources: dict, container: dict) -> dict[str, str]:
    """The settings a container takes from the ConfigMap (its name as kustomize rewrote it)."""
    (source,) = container["envFrom"]
    return resources[("ConfigMap", source["configMapRef"]["name"])]["data"]


def dockerfile(project: Path) -> str:
    return (project / "Dockerfile").read_text(encoding="utf-8")


def workflow(project: Path) -> dict:
    return yaml.safe_load((project / WORKFLOW).read_text(encoding="utf-8"))


def deployment_files(project: Path) -> list[Path]:
    files = [p for p in (project / "deploy").rglob("*") if p.is_file()]
    return [*files, project / WORKFLOW, project / ".pre-commit-config.yaml"]


# The manifests -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_every_resource_in_its_namespace(shop, overlay):
    project, _ = shop
    resources = rendered(project, overlay)
    assert {kind for kind, _ in resources} == KINDS
    namespace = one(resources, "Namespace")["metadata"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespace = namespace["name"]
    assert namespace == ("order-service-dev" if overlay == "development" else "order-service")
    for (kind, name), document in resources.items():
        assert DNS_LABEL.match(name) and len(name) <= 63, (kind, name)
        if kind != "Namespace":
            assert document["metadata"]["namespace"] == namespace, (kind, name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_probes_listen_where_the_image_serves(shop, overlay):
    project, _ = shop
    server = container(rendered(project, overlay), "Deployment")
    (port,) = server["ports"]
    assert re.search(r"^\s+PORT=(\d+)", dockerfile(project), re.MULTILINE)[1] == "8080"
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    probes = {
        probe: (server[probe]["httpGet"]["path"], server[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/health", "http"),
        "livenessProbe": ("/health", "http"),
        "readinessProbe": ("/ready", "http"),
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_drain_is_defined_once_and_the_grace_period_covers_it(shop, overlay):
    project, _ = shop
    resources = rendered(project, overlay)
    server = container(resources, "Deployment")
    settings = config_map_of(resources, server)
    assert server["lifecycle"]["preStop"]["exec"]["command"] == [
        "/bin/sh",
        "-c",
        'sleep "$DRAIN_SECONDS"',
    ]
    assert "DRAIN_SECONDS" not in env_of(server)  # the ConfigMap is its one home
    drain = int(settings["DRAIN_SECONDS"])
    graceful = int(settings["GUNICORN_GRACEFUL_TIMEOUT"])
    grace = one(resources, "Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    # preStop sleeps DRAIN_SECONDS, then the service drains DRAIN_SECONDS, then Gunicorn's
    # graceful stop; the grace period counts from the start of preStop.
    assert grace > drain + drain + graceful
    strategy = one(resources, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_follow_the_cpu_limit_and_the_pods_apply_no_migration(shop, overlay):
    project, _ = shop
    server = container(rendered(project, overlay), "Deployment")
    env = env_of(server)
    assert env["WEB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": server["name"],
        "resource": "limits.cpu",
        "divisor": "1",
    }
    # Without a CPU limit the downward API would give the node's CPUs.
    assert server["resources"]["limits"]["cpu"]
    assert env["MIGRATE_ON_START"] == {"name": "MIGRATE_ON_START", "value": "false"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_runs_app_migrate_in_the_same_image(shop, overlay):
    project, _ = shop
    resources = rendered(project, overlay)
    job = one(resources, "Job")
    migrate = container(resources, "Job")
    assert migrate["command"] == ["python", "-m", "app.migrate"]
    assert "workingDir" not in migrate  # the image's: WORKDIR, where `app` is
    assert re.search(r"^WORKDIR /srv/service$", dockerfile(project), re.MULTILINE)
    assert migrate["image"] == container(resources, "Deployment")["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert env_of(migrate)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL"
    assert "MIGRATE_ON_START" not in env_of(migrate)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_release_applies_the_job_and_what_it_needs_before_the_server(shop, overlay):
    """deploy/README.md applies `-l app.kubernetes.io/component!=server` first: that must take
    the Job with the ConfigMap, ServiceAccount and namespace it needs, and not the Deployment."""
    project, _ = shop
    readme = (project / "deploy" / "README.md").read_text(encoding="utf-8")
    assert "kubectl apply -k \"$overlay\" -l 'app.kubernetes.io/component!=server'" in readme
    first = {
        kind
        for (kind, _), document in rendered(project, overlay).items()
        if document["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "server"
    }
    assert {"Job", "ConfigMap", "ServiceAccount", "Namespace"} <= first
    assert not first & {"Deployment", "Service", "HorizontalPodAutoscaler"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pods_run_unprivileged_on_a_read_only_root(shop, overlay):
    project, _ = shop
    resources = rendered(project, overlay)
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile(project), re.MULTILINE)
    for kind in ("Deployment", "Job"):
        pod = one(resources, kind)["spec"]["template"]["spec"]
        (box,) = pod["containers"]
        context = box["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert str(context["runAsUser"]) == user[1] and str(context["runAsGroup"]) == user[2]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        # /tmp writable: the Prometheus multiprocess directory (gunicorn.conf.py, TMPDIR)
        (mount,) = box["volumeMounts"]
        assert mount["mountPath"] == "/tmp"
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes[mount["name"]]
        assert box["resources"]["requests"] and box["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_only_referenced(shop, overlay):
    project, _ = shop
    resources = rendered(project, overlay)
    assert "Secret" not in {kind for kind, _ in resources}
    for kind in ("Deployment", "Job"):
        box = container(resources, kind)
        assert not {"DATABASE_URL", "API_KEYS"} & set(config_map_of(resources, box))
        for name in ("DATABASE_URL", "API_KEYS"):
            variable = env_of(box).get(name)
            if variable is not None:
                assert set(variable) == {"name", "valueFrom"}, (kind, variable)
                assert variable["valueFrom"]["secretKeyRef"]["name"] == "order-service-secrets"


def test_no_secret_value_in_any_deployment_file(shop):
    project, _ = shop
    for path in deployment_files(project):
        text = path.read_text(encoding="utf-8")
        for kind, pattern in SECRET_PATTERNS.items():
            assert not pattern.search(text), (path, kind)


def test_the_images_are_pinned_and_never_latest(shop):
    project, blueprint = shop
    version = yaml.safe_load(blueprint.read_text())["system"]["version"]
    production = container(rendered(project, "production"), "Deployment")["image"]
    name, digest = production.split("@")
    assert name == f"registry.example.com/order-service:{version}"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert container(rendered(project, "development"), "Deployment")["image"] == (
        "order-service:dev"
    )
    for overlay in OVERLAYS:
        assert "latest" not in render(project, overlay)


# The tools -------------------------------------------------------------------------------------


def test_kubernetes_validate_strict_rejects_an_unknown_field(shop, tmp_path):
    """The control for the workflow's validation step: strict mode does catch a misspelt key."""
    project, _ = shop
    documents = list(yaml.safe_load_all(render(project, "production")))
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    command = [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(broken)]
    result = run(command + ["--kubernetes-version", "1.30.0"], tmp_path)
    assert result.returncode != 0
    assert "readinessProbes" in result.stdout + result.stderr


def test_checkov_fails_nothing_and_every_skip_has_its_reason(shop, tmp_path):
    project, _ = shop
    manifests = tmp_path / "rendered"  # beside the project, which shop bakes in tmp_path
    manifests.mkdir()
    for overlay in OVERLAYS:
        (manifests / f"{overlay}.yaml").write_text(render(project, overlay), encoding="utf-8")
    command = [str(BIN / "checkov"), "--framework", "kubernetes", "--directory", str(manifests)]
    result = run([*command, "--skip-download", "--output", "json"], manifests)
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, result.stdout
    assert summary["passed"] > 100 and summary["resource_count"] >= len(KINDS)  # it read them
    for skipped in report["results"]["skipped_checks"]:
        where = (skipped["check_id"], skipped["resource"], skipped["file_path"])
        assert skipped["check_id"] in ALLOWED_SKIPS, where
        if skipped["check_id"] in DEVELOPMENT_ONLY_SKIPS:
            assert skipped["file_path"].endswith("development.yaml"), where
        assert len(skipped["check_result"]["suppress_comment"].split()) >= 5, where
    assert result.returncode == 0


def test_pre_commit_runs_the_ruff_that_ci_runs(shop):
    project, _ = shop
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    (repo,) = config["repos"]
    pinned = re.search(r"^ruff==(\S+)$", (project / "requirements-dev.txt").read_text(), re.M)
    assert repo["repo"] == "https://github.com/astral-sh/ruff-pre-commit"
    assert repo["rev"] == f"v{pinned[1]}"
    assert [hook["id"] for hook in repo["hooks"]] == ["ruff-check", "ruff-format"]


# The workflow, run here ----------------------------------------------------------------------


def installed_requirements(step: str) -> list[str]:
    """The files of an install step (`python -m pip install -r FILE ...`), else []."""
    words = step.split()
    if words[:4] != ["python", "-m", "pip", "install"]:
        return []
    files = words[4:][1::2]
    assert words[4:][::2] == ["-r"] * len(files), step
    return files


def included_requirements(path: Path) -> set[Path]:
    """The requirement files path includes (with -r), itself too, transitively."""
    found = {path.resolve()}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("-r "):
            found |= included_requirements(path.parent / line[3:].strip())
    return found


def test_the_workflow_installs_only_what_these_tests_run_with(shop):
    """The install steps are the only ones these tests leave out: they install requirement
    files of the project that this repository's requirements.txt includes, so the tools here
    are the pins CI installs."""
    project, _ = shop
    ours = included_requirements(TEMPLATE_DIR / "requirements.txt")
    skeleton = TEMPLATE_DIR / "{{cookiecutter.system_name}}"
    installs = [
        step["run"]
        for job in workflow(project)["jobs"].values()
        for step in job["steps"]
        if installed_requirements(step.get("run", ""))
    ]
    assert len(installs) == len(workflow(project)["jobs"])
    for step in installs:
        for name in installed_requirements(step):
            assert (skeleton / name).resolve() in ours, step
            assert (project / name).read_bytes() == (skeleton / name).read_bytes()


def run_workflow_job(project: Path, job_name: str, work: Path, request) -> list[str]:
    """Each `run:` step of the job, in order, as GitHub runs it (bash -eo pipefail, the job's
    and the step's env, CI and RUNNER_TEMP) in the project, with this virtualenv (the same
    pins) first on PATH and the machine's kubectl; the install step excepted (test above).
    The PostgreSQL step gets this machine's server (TEST_DATABASE_URL, as the other
    PostgreSQL tests) instead of the service container. Returns the names of the steps run."""
    kubectl()
    job = workflow(project)["jobs"][job_name]
    for step in job["steps"]:
        if "uses" in step:
            assert step["uses"].split("@")[0] in SETUP_ACTIONS, step
    runner_temp = work / "runner-temp"
    runner_temp.mkdir()
    ran = []
    for step in job["steps"]:
        command = step.get("run")
        if command is None or installed_requirements(command):
            continue
        assert "${{" not in command, step  # nothing GitHub would substitute
        env = {**job.get("env", {}), **step.get("env", {})}
        if "TEST_DATABASE_URL" in env:
            env["TEST_DATABASE_URL"] = request.getfixturevalue("postgres_server_url")
        env = {**env, "CI": "true", "RUNNER_TEMP": str(runner_temp)}
        shell = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command]
        result = run(shell, project, env=env)
        assert result.returncode == 0, f"{step['name']}:\n{result.stdout}\n{result.stderr}"
        ran.append(step["name"])
    installs = [s for s in job["steps"] if installed_requirements(s.get("run", ""))]
    assert len(installs) == 1 and len(ran) == len([s for s in job["steps"] if "run" in s]) - 1
    return ran


@pytest.mark.parametrize("job_name", ["tests", "checks"])
def test_the_workflow_job_passes_here(shop, tmp_path, request, job_name):
    project, _ = shop
    ran = run_workflow_job(project, job_name, tmp_path, request)
    if job_name == "checks":
        assert {"actionlint", "yamllint", "hadolint"} <= set(ran)
        rendered_files = sorted(p.name for p in (tmp_path / "runner-temp" / "kubernetes").iterdir())
        assert rendered_files == [f"{overlay}.yaml" for overlay in OVERLAYS]
    else:
        assert {"Tests on SQLite", "Tests on PostgreSQL"} <= set(ran)


def test_the_workflow_uses_the_python_these_tests_run(shop):
    project, _ = shop
    for job in workflow(project)["jobs"].values():
        (setup,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python")]
        assert setup["with"]["python-version"] == "{}.{}".format(*sys.version_info[:2])


# Any blueprint ---------------------------------------------------------------------------------


def test_any_system_name_and_version_give_valid_names_and_tags(tmp_path, request):
    """The longest name a blueprint may have, with an underscore at the 55th character, where
    the Kubernetes name is cut (room for `-migrate`), so that the cut ends on '-'; and a
    version with build metadata ('+', which no image tag may hold). The workflow's checks
    job passes on it too (yamllint's line length, kubernetes-validate, checkov)."""
    name = "a" * 54 + "_" + "b" * 8
    assert len(name) == 63
    blueprint = yaml.safe_load((EXAMPLES_DIR / "order_service.yaml").read_text())
    blueprint["system"] = {**blueprint["system"], "name": name, "version": "2.1.0-rc.1+build.7"}
    project = bake(tmp_path / "out", _blueprint=blueprint)
    for overlay in OVERLAYS:
        resources = rendered(project, overlay)
        assert one(resources, "Deployment")["metadata"]["name"] == "a" * 54
        for (kind, resource), document in resources.items():
            # DNS-1123 subdomains; a label (63 at most) for a Service's, a namespace's and a
            # Job's name (Kubernetes labels its pods with it).
            assert len(resource) <= (63 if kind in LABEL_NAMED else 253), (kind, resource)
            assert all(DNS_LABEL.match(part) for part in resource.split(".")), (kind, resource)
            for value in document["metadata"].get("labels", {}).values():
                assert len(value) <= 63 and DNS_LABEL.match(value), (kind, value)
        image = container(resources, "Deployment")["image"]
        tag = image.split("@")[0].rsplit(":", 1)[1]
        assert DOCKER_TAG.match(tag), image
    assert tag == "2.1.0-rc.1_build.7"
    run_workflow_job(project, "checks", tmp_path, request)
