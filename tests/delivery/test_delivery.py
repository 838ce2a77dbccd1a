"""Delivery files: the GitHub workflows, the Dockerfiles and the local compose file.

None of them can run here (no Docker registry, no Azure, no GitHub runner), so they are checked
statically, with real tools where one exists: the workflows and the compose file against the JSON
schemas that check-jsonschema vendors (no network), the Dockerfiles with hadolint and checkov; and
by structure: pinned actions, least-privilege permissions, OIDC, the approval gate of the Terraform
apply, and the names shared between the workflows, the Dockerfiles, Terraform and the app.

check-jsonschema and checkov live in their own venvs under .tools/ (scripts/setup_tools.sh);
a missing tool fails the test with that instruction rather than skipping it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtsmonitor.cli_training import PRESETS
from rtsmonitor.sites import load_site_config

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
FUNCTIONS_DOCKERFILE = DOCKER / "functions.Dockerfile"
TRAINING_DOCKERFILE = DOCKER / "training.Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
INFRA = REPO / "infra"

CHECK_JSONSCHEMA = REPO / ".tools" / "jsonschema" / "bin" / "check-jsonschema"
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"
HADOLINT = Path(sys.executable).parent / "hadolint"

FUNCTIONS_BASE_IMAGE = re.compile(
    r"^mcr\.microsoft\.com/azure-functions/python:4-python(?P<py>3\.\d+)(@sha256:[0-9a-f]{64})?$"
)
"""Microsoft's Functions host v4 Python image (optionally digest-pinned)."""
ACTION_REF = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(?P<ref>.+)$")
PINNED_REF = re.compile(r"^(v\d+\.\d+\.\d+|[0-9a-f]{40})$")
"""A full version tag (v4.2.2) or a commit sha; not a branch and not a moving major tag (v4)."""
TRAINING_ONLY = re.compile(
    r"^(tensorflow[\w.-]*|tf[-_]nightly|tf[-_]keras|keras|tf2onnx|onnx)([\[<>=!~ ;]|$)", re.IGNORECASE
)
"""Training-only distributions (TensorFlow in any flavour, Keras, the ONNX exporter); onnxruntime is not one."""


# --- helpers ---------------------------------------------------------------------------------------


def _tool(path: Path) -> Path:
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} is missing: run "
            "`bash scripts/setup_tools.sh` (or `bash scripts/setup.sh`, which calls it) to install the "
            "pinned check tools under .tools/",
            pytrace=False,
        )
    return path


def _run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, check=False, **kwargs)


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a YAML mapping"
    return data


def _triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The ``on:`` mapping (PyYAML reads the bare key ``on`` as the boolean True)."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), f"workflow {workflow.get('name')!r} has no 'on' triggers"
    return {key: value or {} for key, value in on.items()}


def _workflow(name: str) -> dict[str, Any]:
    path = WORKFLOWS_DIR / name
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    return _load_yaml(path)


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def _uses(workflow: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(job id, ``uses:`` reference) for every step and every reusable-workflow job."""
    for job_id, job in workflow["jobs"].items():
        if "uses" in job:
            yield job_id, str(job["uses"])
        for step in _steps(job):
            if "uses" in step:
                yield job_id, str(step["uses"])


def _scripts(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(job))


def _step_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in _steps(job) if str(step.get("uses", "")).split("@")[0] == action]


def pin_problem(ref: str) -> str | None:
    """Why a ``uses:`` reference is not pinned to a release (vX.Y.Z) or a commit, or None when it is."""
    if ref.startswith("./"):
        return None  # an action or workflow of this repository, versioned with it
    if ref.startswith("docker://"):
        image = ref.removeprefix("docker://")
        tagged = re.search(r":\w[\w.-]*$", image.split("/")[-1]) and not image.endswith(":latest")
        if "@sha256:" in image or tagged:
            return None
        return f"{ref}: pin the image to a tag or digest"
    match = ACTION_REF.match(ref)
    if not match:
        return f"{ref}: not OWNER/REPO@REF"
    if not PINNED_REF.match(match["ref"]):
        return f"{ref}: pin to a full version tag (vX.Y.Z) or a commit sha, not {match['ref']!r}"
    return None


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def _copy_sources(args: str) -> list[str]:
    parts = [p for p in args.split() if not p.startswith("--")]
    return parts[:-1]


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` patterns exclude a path (or one of its parent folders)."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        for candidate in candidates:
            names = [candidate]
            if pattern.startswith("**/"):
                pattern_tail = pattern[3:]
                names = ["/".join(candidate.split("/")[i:]) for i in range(len(candidate.split("/")))]
                if any(fnmatch.fnmatchcase(name, pattern_tail) for name in names):
                    excluded = not negate
                    break
            elif fnmatch.fnmatchcase(candidate, pattern):
                excluded = not negate
                break
    return excluded


def _dockerignore_patterns() -> list[str]:
    path = REPO / ".dockerignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def satisfies(version: str, constraint: str) -> bool:
    """Whether a version meets a Terraform version constraint (``>= 1.9.0, < 2.0.0``, ``~> 1.9``)."""
    have = _version(version)
    for clause in filter(None, (c.strip() for c in constraint.split(","))):
        match = re.fullmatch(r"(>=|<=|!=|~>|>|<|=)?\s*v?(\d+(?:\.\d+)*)", clause)
        assert match, f"cannot read the version constraint {clause!r}"
        op, want_text = match[1] or "=", match[2]
        want = _version(want_text)
        padded = have + (0,) * (len(want) - len(have))
        if op == "~>":
            upper = (*want[:-2], want[-2] + 1) if len(want) > 1 else (want[0] + 1,)
            ok = padded >= want and have[: len(upper)] < upper
        else:
            ok = {
                ">=": padded >= want,
                "<=": padded <= want,
                ">": padded > want,
                "<": padded < want,
                "=": padded[: len(want)] == want,
                "!=": padded[: len(want)] != want,
            }[op]
        if not ok:
            return False
    return True


# --- schema checks (check-jsonschema, offline) -----------------------------------------------------


def test_workflows_exist() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"ci.yml", "infra.yml", "images.yml", "training.yml", "deploy.yml"} <= names


def test_workflows_match_the_github_workflow_schema() -> None:
    tool = _tool(CHECK_JSONSCHEMA)
    result = _run([tool, "--builtin-schema", "vendor.github-workflows", *WORKFLOWS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    tool = _tool(CHECK_JSONSCHEMA)
    result = _run([tool, "--builtin-schema", "vendor.compose-spec", COMPOSE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "name: broken\non: push\npermissions:\n  id-token: writ\njobs:\n  a:\n    steps:\n      - run: true\n",
        encoding="utf-8",
    )
    result = _run([_tool(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", broken])
    assert result.returncode != 0, "check-jsonschema accepted a workflow with a bad permission and no runs-on"


# --- every workflow ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "actions/checkout@main",
        "actions/checkout@master",
        "actions/checkout@v4",
        "actions/checkout",
        "docker://alpine",
        "docker://alpine:latest",
    ],
)
def test_pin_rule_rejects_moving_references(ref: str) -> None:
    assert pin_problem(ref) is not None


@pytest.mark.parametrize(
    "ref",
    [
        "actions/checkout@v4.2.2",
        "github/codeql-action/init@v3.28.0",
        "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683",
        "./.github/actions/setup",
        "docker://alpine:3.20",
    ],
)
def test_pin_rule_accepts_pinned_references(ref: str) -> None:
    assert pin_problem(ref) is None


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned(path: Path) -> None:
    problems = [f"job {job}: {problem}" for job, ref in _uses(_load_yaml(path)) if (problem := pin_problem(ref))]
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_declares_least_privilege_permissions(path: Path) -> None:
    workflow = _load_yaml(path)
    assert "permissions" in workflow, f"{path.name}: declare top-level permissions (e.g. contents: read)"
    top = workflow["permissions"]
    assert isinstance(top, dict), f"{path.name}: permissions: {top!r}; list the scopes instead"
    wide = {scope: level for scope, level in top.items() if level not in ("read", "none")}
    assert not wide, f"{path.name}: top-level permissions grant {wide}; grant writes per job"
    for job_id, job in workflow["jobs"].items():
        assert job.get("permissions") != "write-all", f"{path.name}: job {job_id} has write-all"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_azure_login_is_oidc_with_an_id_token(path: Path) -> None:
    workflow = _load_yaml(path)
    for job_id, job in workflow["jobs"].items():
        for step in _step_using(job, "azure/login"):
            permissions = job.get("permissions", workflow.get("permissions", {}))
            assert permissions.get("id-token") == "write", f"{path.name}: job {job_id} logs in without id-token: write"
            inputs = step.get("with", {})
            assert {"client-id", "tenant-id", "subscription-id"} <= set(inputs), f"{path.name}: job {job_id}"
            assert "creds" not in inputs, f"{path.name}: job {job_id} logs in with a stored secret, not OIDC"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_jobs_that_touch_azure_from_a_release_run_in_an_environment(path: Path) -> None:
    # The federated credential matches the token's subject; for tags, dispatches and workflow_run
    # that is only stable as "environment:<name>" (see docs/deploy.md).
    workflow = _load_yaml(path)
    triggers = _triggers(workflow)
    if path.name == "infra.yml" or not (
        {"workflow_dispatch", "workflow_run"} & set(triggers) or "tags" in str(triggers)
    ):
        return
    for job_id, job in workflow["jobs"].items():
        if _step_using(job, "azure/login"):
            assert job.get("environment"), f"{path.name}: job {job_id} logs in to Azure outside an environment"


def test_repository_variables_are_documented() -> None:
    guide = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    names = set()
    for path in WORKFLOWS:
        names |= set(re.findall(r"\bvars\.([A-Z][A-Z0-9_]*)", path.read_text(encoding="utf-8")))
    missing = sorted(name for name in names if name not in guide)
    assert not missing, f"docs/deploy.md does not explain the repository variables {missing}"


# --- ci.yml ---------------------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command_on_every_push_and_pull_request() -> None:
    command = "bash scripts/test.sh"
    assert command in (REPO / "README.md").read_text(encoding="utf-8")
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci = _workflow("ci.yml")
    assert {"push", "pull_request"} <= set(_triggers(ci))
    runs = [str(step.get("run", "")).strip() for job in ci["jobs"].values() for step in _steps(job)]
    assert command in runs, f"ci.yml runs {runs}, not {command!r}"


# --- infra.yml ------------------------------------------------------------------------------------


def _infra_required_version() -> str:
    for tf in sorted(INFRA.glob("*.tf")):
        match = re.search(r'required_version\s*=\s*"([^"]+)"', tf.read_text(encoding="utf-8"))
        if match:
            return match[1]
    pytest.fail("no required_version in infra/*.tf", pytrace=False)


def test_infra_workflow_checks_and_plans_every_pull_request() -> None:
    infra = _workflow("infra.yml")
    triggers = _triggers(infra)
    assert "infra/**" in triggers["pull_request"]["paths"]
    assert infra["defaults"]["run"]["working-directory"] == "infra" and INFRA.is_dir()
    plan = infra["jobs"]["plan"]
    script = _scripts(plan)
    for command in ("terraform fmt -check", "terraform init", "-backend-config=", "terraform validate"):
        assert command in script, f"infra.yml plan job does not run {command!r}"
    assert re.search(r"terraform plan .*-var-file=\"?environments/", script)
    assert _step_using(plan, "actions/upload-artifact"), "the plan is not uploaded"
    assert plan["permissions"].get("pull-requests") == "write", "the plan cannot be posted on the PR"


def test_infra_workflow_applies_main_only_behind_an_environment() -> None:
    infra = _workflow("infra.yml")
    apply = infra["jobs"]["apply"]
    assert apply.get("environment") == "production", "the apply job must wait for the production approval"
    assert "plan" in ([apply["needs"]] if isinstance(apply["needs"], str) else apply["needs"])
    assert "refs/heads/main" in apply["if"] and "pull_request" in apply["if"]
    assert "terraform apply" in _scripts(apply) and "tfplan" in _scripts(apply)
    assert _triggers(infra)["push"]["branches"] == ["main"]


def test_infra_workflow_pins_terraform_to_a_version_infra_accepts() -> None:
    infra = _workflow("infra.yml")
    version = infra["env"]["TF_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"TF_VERSION {version!r} is not an exact version"
    for job_id, job in infra["jobs"].items():
        for step in _step_using(job, "hashicorp/setup-terraform"):
            assert step["with"]["terraform_version"] == "${{ env.TF_VERSION }}", f"job {job_id}"
    constraint = _infra_required_version()
    assert satisfies(version, constraint), f"TF_VERSION {version} does not meet infra's required_version {constraint}"


def test_infra_workflow_environment_files_exist() -> None:
    env = _workflow("infra.yml")["env"]["TF_ENV"]
    for path in (INFRA / "backend" / f"{env}.hcl", INFRA / "environments" / f"{env}.tfvars"):
        assert path.is_file(), f"infra.yml uses {path.relative_to(REPO)}, which does not exist"


def test_infra_plan_gives_every_required_variable() -> None:
    infra = _workflow("infra.yml")
    text = "\n".join(tf.read_text(encoding="utf-8") for tf in sorted(INFRA.glob("*.tf")))
    blocks = re.findall(r'^variable\s+"(\w+)"\s*\{(.*?)^\}', text, re.MULTILINE | re.DOTALL)
    required = {name for name, body in blocks if not re.search(r"^\s*default\s*=", body, re.MULTILINE)}
    assert blocks and "image_tag" in required
    tfvars = (INFRA / "environments" / f"{infra['env']['TF_ENV']}.tfvars").read_text(encoding="utf-8")
    given = set(re.findall(r"^(\w+)\s*=", tfvars, re.MULTILINE))
    script = _scripts(infra["jobs"]["plan"])
    missing = sorted(name for name in required - given if f'-var "{name}=' not in script)
    assert not missing, f"terraform plan in infra.yml would stop for the required variables {missing}"


@pytest.mark.parametrize(
    ("version", "constraint", "expected"),
    [
        ("1.9.8", ">= 1.9.0, < 2.0.0", True),
        ("1.8.5", ">= 1.9.0, < 2.0.0", False),
        ("2.0.0", ">= 1.9.0, < 2.0.0", False),
        ("1.9.8", "~> 1.9", True),
        ("2.1.0", "~> 1.9", False),
        ("1.9.8", "~> 1.9.0", True),
        ("1.10.0", "~> 1.9.0", False),
    ],
)
def test_version_constraint_reader(version: str, constraint: str, expected: bool) -> None:
    assert satisfies(version, constraint) is expected


# --- images.yml, deploy.yml, training.yml ---------------------------------------------------------------


def _tf_default(variable: str) -> str:
    text = "\n".join(tf.read_text(encoding="utf-8") for tf in sorted(INFRA.glob("*.tf")))
    match = re.search(rf'variable\s+"{variable}"\s*\{{.*?default\s*=\s*"([^"]*)"', text, re.DOTALL)
    assert match, f"infra/*.tf has no default for variable {variable!r}"
    return match[1]


def test_images_workflow_builds_both_images_on_release_tags() -> None:
    images = _workflow("images.yml")
    assert _triggers(images)["push"]["tags"] == ["v*"]
    job = images["jobs"]["build-push"]
    matrix = {item["image"]: item["dockerfile"] for item in job["strategy"]["matrix"]["include"]}
    assert matrix == {
        _tf_default("functions_image_name"): "docker/functions.Dockerfile",
        _tf_default("training_image_name"): "docker/training.Dockerfile",
    }, "image names must be those Terraform runs (infra/variables.tf)"
    for dockerfile in matrix.values():
        assert (REPO / dockerfile).is_file(), f"images.yml builds {dockerfile}, which does not exist"
        args = [args for keyword, args in dockerfile_instructions(REPO / dockerfile) if keyword == "ARG"]
        assert any(a.startswith("RTS_CODE_VERSION") for a in args), f"{dockerfile} does not take RTS_CODE_VERSION"
    (build,) = _step_using(job, "docker/build-push-action")
    assert build["with"]["file"] == "${{ matrix.dockerfile }}" and build["with"]["push"] is True
    assert "RTS_CODE_VERSION=" in build["with"]["build-args"]
    tags = build["with"]["tags"]
    assert ":${{ github.ref_name }}" in tags and ":${{ github.sha }}" in tags
    assert "az acr login" in _scripts(job)


def test_deploy_workflow_rolls_the_function_app_to_an_image_and_smoke_checks_it() -> None:
    deploy = _workflow("deploy.yml")
    triggers = _triggers(deploy)
    assert "image_tag" in triggers["workflow_dispatch"]["inputs"]
    assert triggers["workflow_run"]["workflows"] == [_workflow("images.yml")["name"]]
    job = deploy["jobs"]["deploy"]
    assert job.get("environment") == "production"
    assert job["env"]["IMAGE_NAME"] == _tf_default("functions_image_name")
    assert job["env"]["TRAINING_IMAGE_NAME"] == _tf_default("training_image_name")
    script = _scripts(job)
    assert "az functionapp config container set" in script
    assert "RTS_CODE_VERSION=" in script, "the records would keep the previous code version (Terraform sets it)"
    assert "az containerapp job update" in script
    assert "az functionapp keys list" in script and "/api/sites?code=" in script


def test_training_workflow_starts_the_job_with_the_pipelines_settings() -> None:
    training = _workflow("training.yml")
    inputs = _triggers(training)["workflow_dispatch"]["inputs"]
    assert inputs["preset"]["options"] == list(PRESETS)
    assert inputs["loso"]["options"] == ["all", "none"]
    assert "model_version" in inputs
    script = _scripts(training["jobs"]["start"])
    assert "az containerapp job start" in script
    pipeline = (REPO / "training" / "rtstrain" / "pipeline.py").read_text(encoding="utf-8")
    for setting in ("RTS_PRESET", "RTS_LOSO", "RTS_MODEL_VERSION"):
        assert setting in script, f"training.yml does not set {setting}"
        assert f'"{setting}"' in pipeline, f"the training pipeline does not read {setting}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_refer_to_existing_dockerfiles(path: Path) -> None:
    for reference in re.findall(r"docker/[\w.-]+\.Dockerfile", path.read_text(encoding="utf-8")):
        assert (REPO / reference).is_file(), f"{path.name} refers to {reference}, which does not exist"


# --- Dockerfiles ----------------------------------------------------------------------------------


def test_functions_image_is_the_official_functions_python_image_of_our_python() -> None:
    froms = [args.split()[0] for keyword, args in dockerfile_instructions(FUNCTIONS_DOCKERFILE) if keyword == "FROM"]
    assert len(froms) == 1, f"one stage expected, found FROM {froms}"
    match = FUNCTIONS_BASE_IMAGE.match(froms[0])
    assert match, f"{froms[0]} is not mcr.microsoft.com/azure-functions/python:4-python3.X"
    target = re.search(r'target-version\s*=\s*"py3(\d+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert target and match["py"] == f"3.{target[1]}", "the image's Python differs from the project's (pyproject)"


def test_functions_image_installs_the_inference_requirements_then_the_package_without_deps() -> None:
    instructions = dockerfile_instructions(FUNCTIONS_DOCKERFILE)
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    (requirements_copy,) = [c for c in copies if "functions/requirements.txt" in c]
    destination = requirements_copy.split()[-1]
    assert any(re.search(rf"pip install .*-r {re.escape(destination)}", run) for run in runs)
    assert any(re.search(r"pip install .*--no-deps ", run) for run in runs), "the package must not pull more deps"
    assert all("--no-cache-dir" in run for run in runs if "pip install" in run)
    assert not any(c.split()[0] == "training" or " training " in f" {c} " for c in copies), "no TensorFlow code"
    app = [c for c in copies if c.endswith("/home/site/wwwroot/")]
    assert app and "functions/function_app.py" in app[0] and "functions/host.json" in app[0]
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in env
    assert "AzureFunctionsJobHost__Logging__Console__IsEnabled=true" in env
    assert "RTS_CODE_VERSION=${RTS_CODE_VERSION}" in env


@pytest.mark.parametrize(
    ("requirement", "training_only"),
    [
        ("tensorflow==2.21.0", True),
        ("tensorflow-cpu==2.21.0", True),
        ("tensorflow[and-cuda]==2.21.0", True),
        ("tf2onnx==1.17.0", True),
        ("onnx==1.23.2", True),
        ("onnxruntime==1.32.0", False),
        ("keras-preprocessing==1.1", False),
    ],
)
def test_training_only_rule(requirement: str, training_only: bool) -> None:
    assert bool(TRAINING_ONLY.match(requirement)) is training_only


def test_functions_requirements_hold_no_training_dependency() -> None:
    lines = (REPO / "functions" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    assert "onnxruntime" in {re.split(r"[\[<>=!~ ;]", r)[0].lower() for r in requirements}
    training = [r for r in requirements if TRAINING_ONLY.match(r)]
    assert not training, f"functions/requirements.txt holds training-only packages {training}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_exist_and_are_in_the_build_context(path: Path) -> None:
    patterns = _dockerignore_patterns()
    for keyword, args in dockerfile_instructions(path):
        if keyword not in ("COPY", "ADD") or "--from=" in args:
            continue
        for source in _copy_sources(args):
            assert (REPO / source).exists(), f"{path.name}: COPY {source}: no such path"
            assert not dockerignored(source, patterns), f"{path.name}: COPY {source} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_tool_folders_out() -> None:
    patterns = _dockerignore_patterns()
    for path in (".git", ".venv", ".tools", "node_modules", "functions/local.settings.json", "infra/.terraform"):
        assert dockerignored(path, patterns), f".dockerignore lets {path} into the build context"
    assert not dockerignored("shared/rtsmonitor/models/demo/model.onnx", patterns)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_checkov_skips_give_a_reason(path: Path) -> None:
    for match in re.finditer(r"checkov:skip=(\w+)(.*)", path.read_text(encoding="utf-8")):
        reason = match[2].removeprefix(":").strip()
        assert len(reason) > 20, f"{path.name}: skip of {match[1]} without a reason"


def test_hadolint_passes_on_every_dockerfile() -> None:
    assert DOCKERFILES, "no docker/*.Dockerfile"
    tool = HADOLINT if os.access(HADOLINT, os.X_OK) else _tool(REPO / ".venv" / "bin" / "hadolint")
    result = _run([tool, *DOCKERFILES])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n", encoding="utf-8")
    tool = HADOLINT if os.access(HADOLINT, os.X_OK) else _tool(REPO / ".venv" / "bin" / "hadolint")
    assert _run([tool, bad]).returncode != 0


def _checkov(directory: Path) -> dict[str, Any]:
    tool = _tool(CHECKOV)
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # offline: no download of the check-id mapping
    result = _run(
        [tool, "--directory", directory, "--framework", "dockerfile", "--skip-download", "--output", "json"], env=env
    )
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert isinstance(report, dict), f"unexpected checkov report {str(report)[:200]}"
    return report


@pytest.fixture(scope="module")
def checkov_docker() -> dict[str, Any]:
    return _checkov(DOCKER)


def test_checkov_passes_on_the_dockerfiles(checkov_docker: dict[str, Any]) -> None:
    summary = checkov_docker["summary"]
    failed = [
        f"{c['check_id']} {c['file_path']}: {c['check_name']}" for c in checkov_docker["results"]["failed_checks"]
    ]
    assert not failed, "checkov: " + "; ".join(failed)
    assert summary["parsing_errors"] == 0
    scanned = {c["file_path"].lstrip("/") for c in checkov_docker["results"]["passed_checks"]}
    assert scanned == {path.name for path in DOCKERFILES}, f"checkov scanned {scanned}"


def test_checkov_can_fail(tmp_path: Path) -> None:
    (tmp_path / "bad.Dockerfile").write_text("FROM python:latest\nADD . /app\n", encoding="utf-8")
    report = _checkov(tmp_path)
    assert report["summary"]["failed"] > 0


# --- compose.yaml -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE)


def _connection_string(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.strip(";").split(";"))


def _published(service: dict[str, Any]) -> dict[int, int]:
    ports = {}
    for spec in service.get("ports", []):
        *_, host, container = str(spec).split(":")
        ports[int(container)] = int(host)
    return ports


def test_compose_runs_azurite_the_stac_server_and_the_functions_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"azurite", "stac", "functions"}
    package = json.loads((REPO / "package.json").read_text(encoding="utf-8"))
    assert (
        services["azurite"]["image"]
        == f"mcr.microsoft.com/azure-storage/azurite:{package['devDependencies']['azurite']}"
    )
    for name in ("functions", "stac"):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/functions.Dockerfile"
        assert (COMPOSE.parent / build["context"]).resolve() == REPO
    assert _published(services["functions"]) == {80: 7071}
    assert services["functions"]["depends_on"]["stac"]["condition"] == "service_healthy"


def test_compose_functions_settings_point_at_the_other_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["functions"]["environment"]
    storage = _connection_string(env["AzureWebJobsStorage"])
    assert storage["AccountName"] == "devstoreaccount1"
    azurite_ports = _published(services["azurite"])
    for kind, port in (("Blob", 10000), ("Queue", 10001), ("Table", 10002)):
        assert storage[f"{kind}Endpoint"] == f"http://azurite:{port}/devstoreaccount1"
        assert port in azurite_ports
    assert env["RTS_STORAGE"] == "azure:"
    stac_command = " ".join(services["stac"]["command"])
    port = re.search(r"rts offline serve \S+ --host 0\.0\.0\.0 --port (\d+)", stac_command)
    assert port, f"the stac service does not serve its corpus on all interfaces: {stac_command}"
    assert env["RTS_STAC_URL"] == f"http://stac:{port[1]}"
    local = json.loads((REPO / "functions" / "local.settings.example.json").read_text(encoding="utf-8"))["Values"]
    assert env["RTS_YEARLY_SCHEDULE"] == local["RTS_YEARLY_SCHEDULE"]
    assert len(env["RTS_YEARLY_SCHEDULE"].split()) == 6, "NCRONTAB has six fields"
    # every app setting the local Functions settings name is set (RTS_CODE_VERSION comes from the build)
    missing = set(local) - set(env) - {"RTS_CODE_VERSION"}
    assert not missing, f"compose.yaml does not set {sorted(missing)}"
    assert "RTS_CODE_VERSION" in services["functions"]["build"]["args"]


def test_compose_sets_every_app_setting_the_bindings_use(compose: dict[str, Any]) -> None:
    # function_app.py names its settings through module constants: %{SETTING}% in f-strings, connection=...
    source = (REPO / "functions" / "function_app.py").read_text(encoding="utf-8")
    constants = dict(re.findall(r'^([A-Z_]+) = "([^"]+)"', source, re.MULTILINE))
    settings = {constants[name] for name in re.findall(r"%\{([A-Z_]+)\}%", source)}
    settings |= {constants[name] for name in re.findall(r"connection=([A-Z_]+)", source)}
    settings |= set(re.findall(r'"%([A-Za-z_]+)%"', source))
    assert {"RTS_YEARLY_SCHEDULE", "AzureWebJobsStorage"} <= settings, settings
    env = compose["services"]["functions"]["environment"]
    assert settings <= set(env), f"compose.yaml misses {sorted(settings - set(env))}"


def test_compose_demo_site_and_keys_fit_the_local_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    stac_command = " ".join(services["stac"]["command"])
    build = re.search(r"rts offline build \S+ --site (\S+) --years (\d{4})-(\d{4})", stac_command)
    assert build, stac_command
    site = load_site_config(DOCKER / "local" / "horton01.yaml")
    assert site.id == build[1]
    assert int(build[2]) <= site.first_year and site.last_year is not None and site.last_year <= int(build[3])
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["functions"]["volumes"]}
    keys_file = COMPOSE.parent / mounts[services["functions"]["environment"]["FUNCTIONS_SECRETS_PATH"] + "/host.json"]
    keys = json.loads(keys_file.read_text(encoding="utf-8"))
    assert keys["functionKeys"][0]["value"] in (DOCKER / "README.md").read_text(encoding="utf-8")
