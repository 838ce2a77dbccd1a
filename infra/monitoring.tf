# Logs and telemetry: one Log Analytics workspace for everything, Application Insights (workspace
# based) for the Functions, and the storage services' audit logs.

resource "azurerm_log_analytics_workspace" "main" {
  name                = "${local.name}-logs"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}

resource "azurerm_application_insights" "main" {
  name                 = "${local.name}-appi"
  resource_group_name  = azurerm_resource_group.main.name
  location             = azurerm_resource_group.main.location
  workspace_id         = azurerm_log_analytics_workspace.main.id
  application_type     = "other"
  retention_in_days    = var.log_retention_days
  daily_data_cap_in_gb = var.log_daily_cap_gb

  # Telemetry is accepted only with an Entra ID token (the Function App's identity has Monitoring
  # Metrics Publisher, see identity.tf); the connection string alone cannot write to it.
  local_authentication_enabled = false

  tags = local.tags
}

# Every read, write and delete on blobs, queues and tables, to the workspace (a few hundred MB a
# month at this workload: mostly the Functions host polling its queues and renewing its leases).
resource "azurerm_monitor_diagnostic_setting" "storage" {
  for_each = toset(["blobServices", "queueServices", "tableServices"])

  name                       = "to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.main.id}/${each.key}/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category_group = "allLogs"
  }
}
