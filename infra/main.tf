# Names, tags and the resource group shared by every other file.

data "azurerm_client_config" "current" {}

locals {
  # "rts-prod": the readable part of every name.
  name = "${var.name_prefix}-${var.environment}"
  # Storage accounts, registries and Function App host names are unique across all of Azure. A
  # suffix derived from the subscription keeps them unique yet stable from one plan to the next
  # (no random provider, nothing to import).
  suffix  = substr(sha256("${data.azurerm_client_config.current.subscription_id}/${var.name_prefix}/${var.environment}"), 0, 6)
  compact = "${var.name_prefix}${var.environment}"

  tags = merge(var.tags, {
    project     = "rtsmonitor"
    environment = var.environment
    managed-by  = "terraform"
  })
}

resource "azurerm_resource_group" "main" {
  name     = "${local.name}-rg"
  location = var.location
  tags     = local.tags
}
