# Terraform core, the azurerm provider and the remote state backend.
#
# The provider is pinned to its current major version (5.x, July 2026 onwards); `terraform init`
# writes the exact version it picked to .terraform.lock.hcl, which should be committed from the
# first machine that can reach the Terraform registry (not ours: see README.md).

terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 5.2"
    }
  }

  # Partial configuration: the state account, container and key come from a file in backend/
  # (terraform init -backend-config=backend/prod.hcl). State is read and written with the
  # operator's Entra ID login, never with a storage account key.
  backend "azurerm" {
    use_azuread_auth = true
  }
}

provider "azurerm" {
  features {}

  # The storage account has shared-key access disabled, so the provider must use Entra ID for any
  # data-plane call it makes.
  storage_use_azuread = true

  # azurerm 5.x registers no resource providers by default; register exactly the ones used here.
  resource_providers_to_register = [
    "Microsoft.App",
    "Microsoft.ContainerRegistry",
    "Microsoft.Insights",
    "Microsoft.ManagedIdentity",
    "Microsoft.OperationalInsights",
    "Microsoft.Storage",
    "Microsoft.Web",
  ]
}
