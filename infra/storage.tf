# The storage account of the whole system: site configs, results and models (Blob), records and
# sites (Table), the site-year queue and its poison queue (Queue), and the Functions host's own
# state (AzureWebJobsStorage: leases, timer schedule, blob receipts, function keys).
#
# Shared-key access is disabled: every client (the Functions host, our code through
# DefaultAzureCredential, the training job, Terraform, operators) signs in with Entra ID. That works
# because the host and its blob, queue and timer triggers accept identity-based connections
# (AzureWebJobsStorage__accountName/__credential/__clientId) and a container Function App needs no
# Azure Files content share (content_share_force_disabled in functions.tf).

locals {
  # The names the code uses; tests/infra/test_terraform.py checks them against the constants in
  # rtsmonitor.registry, .records, .modelstore, .handlers and .jobs, and rtstrain.pipeline (labels).
  blob_containers = ["sites", "sites-errors", "results", "models", "failures", "labels"]
  tables          = ["sites", "rtsrecords"]
  queues          = ["site-years", "site-years-poison"]
}

resource "azurerm_storage_account" "main" {
  #checkov:skip=CKV_AZURE_33:Queue reads, writes and deletes are logged by azurerm_monitor_diagnostic_setting.storage (monitoring.tf); the check only knows the legacy queue_properties logging, removed in azurerm 5.x and reachable only with a shared key.
  #checkov:skip=CKV_AZURE_35:No network rules: the Function App (Elastic Premium without VNet integration) and the Container Apps job reach storage over the public endpoint; access is Entra ID only (shared keys disabled, no public blobs).
  #checkov:skip=CKV_AZURE_59:Public endpoint needed for the same reason as CKV_AZURE_35; anonymous and shared-key access are both disabled.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys: the data (public satellite-derived products) does not call for a customer-managed Key Vault key.
  #checkov:skip=CKV_AZURE_43:False positive: checkov cannot resolve the data-source suffix; the name is name_prefix (2-10) + environment (2-5) + "st" + 6 hex digits, lower-case letters and digits only, at most 23 characters (variables.tf validates both parts).
  #checkov:skip=CKV2_AZURE_33:No private endpoint: the design has no virtual network (see CKV_AZURE_35).
  name                     = "${local.compact}st${local.suffix}"
  resource_group_name      = azurerm_resource_group.main.name
  location                 = azurerm_resource_group.main.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.storage_replication_type

  https_traffic_only_enabled       = true
  min_tls_version                  = "TLS1_2"
  allow_nested_items_to_be_public  = false
  shared_access_key_enabled        = false
  default_to_oauth_authentication  = true
  cross_tenant_replication_enabled = false
  local_user_enabled               = false

  sas_policy {
    expiration_period = "00.01:00:00"
    expiration_action = "Block"
  }

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = var.blob_soft_delete_days
    }

    container_delete_retention_policy {
      days = var.blob_soft_delete_days
    }
  }

  tags = local.tags
}

# Re-runs replace a site-year's products (new run folder, old one deleted): versioning keeps the
# old blobs as versions, which this rule deletes after blob_version_retention_days.
resource "azurerm_storage_management_policy" "main" {
  storage_account_id = azurerm_storage_account.main.id

  rule {
    name    = "expire-old-versions"
    enabled = true

    filters {
      blob_types = ["blockBlob"]
    }

    actions {
      version {
        delete_after_days_since_creation = var.blob_version_retention_days
      }
    }
  }
}

resource "azurerm_storage_container" "this" {
  #checkov:skip=CKV2_AZURE_21:Blob reads are logged by azurerm_monitor_diagnostic_setting.storage (monitoring.tf); the check only knows azurerm_log_analytics_storage_insights, which needs the storage account key this account disables.
  for_each = toset(local.blob_containers)

  name                  = each.key
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_table" "this" {
  #checkov:skip=CKV2_AZURE_20:Table reads are logged by azurerm_monitor_diagnostic_setting.storage (monitoring.tf); the check only knows azurerm_log_analytics_storage_insights, which needs the storage account key this account disables.
  for_each = toset(local.tables)

  name               = each.key
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_storage_queue" "this" {
  for_each = toset(local.queues)

  name               = each.key
  storage_account_id = azurerm_storage_account.main.id
}
