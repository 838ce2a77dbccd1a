# Remote state for prod: terraform init -backend-config=backend/prod.hcl (fill in the names first).
# The state account is created once, outside this configuration (see infra/README.md); the
# operator (or the CI identity) needs Storage Blob Data Contributor on its container, since state
# is read with Entra ID (use_azuread_auth = true in providers.tf), never with an account key.
resource_group_name  = "rts-tfstate-rg"
storage_account_name = "rtstfstateXXXXXX"
container_name       = "tfstate"
key                  = "rtsmonitor/prod.tfstate"
