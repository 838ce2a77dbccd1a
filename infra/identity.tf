# Two user-assigned identities, each with only the roles its workload needs. No keys, no
# connection strings: the Function App and the training job sign in to storage, the registry and
# Application Insights with these identities (AZURE_CLIENT_ID tells DefaultAzureCredential which).

resource "azurerm_user_assigned_identity" "functions" {
  name                = "${local.name}-functions-id"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "training" {
  name                = "${local.name}-training-id"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

# --- the Function App ------------------------------------------------------------------------------
# The Functions host with identity-based AzureWebJobsStorage needs Storage Blob Data Owner (host
# locks, timer schedule status, blob-trigger receipts, function keys in azure-webjobs-secrets) and
# Storage Queue Data Contributor (the blob trigger's internal queue, the queue triggers, our sends
# to site-years and site-years-poison); our code reads and writes the sites and rtsrecords tables.

resource "azurerm_role_assignment" "functions_blob" {
  scope                = azurerm_storage_account.main.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "functions_queue" {
  scope                = azurerm_storage_account.main.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "functions_table" {
  scope                = azurerm_storage_account.main.id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "functions_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

# Application Insights has local (instrumentation-key) authentication disabled.
resource "azurerm_role_assignment" "functions_telemetry" {
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

# --- the training job ----------------------------------------------------------------------------
# It reads the label files (the labels container) and publishes a bundle (models/<name>/<version>/
# and models/current.json): read access to labels, write access to models, nothing else.

resource "azurerm_role_assignment" "training_labels" {
  scope                = azurerm_storage_container.this["labels"].id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.training.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "training_models" {
  scope                = azurerm_storage_container.this["models"].id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.training.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "training_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.training.principal_id
  principal_type       = "ServicePrincipal"
}
