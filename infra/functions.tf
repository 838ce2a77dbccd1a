# The Function App: our functions image (docker/functions.Dockerfile) from the registry, on an
# Elastic Premium plan (EP1 by default; see README.md for the choice and its cost), with a
# user-assigned identity for storage, the registry and Application Insights.

locals {
  # Elastic Premium scales out on the queue and keeps one warm instance; a Dedicated SKU is one
  # fixed instance that must be kept Always On for the timer, queue and blob triggers to fire.
  elastic = startswith(var.functions_plan_sku, "EP")

  # Every app setting the code reads (tests/infra/test_terraform.py derives the list from the code
  # and checks it against this map). None of them is a key or a connection string: storage is
  # reached with the identity below.
  functions_app_settings = {
    FUNCTIONS_WORKER_RUNTIME = "python"
    AzureWebJobsFeatureFlags = "EnableWorkerIndexing"

    # The host's storage (triggers, leases, keys) with the user-assigned identity. The third
    # setting, AzureWebJobsStorage__accountName, is written by the provider from
    # storage_account_name + storage_uses_managed_identity below (azurerm removes it from
    # app_settings when it reads the app back, so setting it here would show a change on every plan).
    AzureWebJobsStorage__credential = "managedidentity"
    AzureWebJobsStorage__clientId   = azurerm_user_assigned_identity.functions.client_id

    # Our code's storage (rtsmonitor.storage.open_storage("azure://ACCOUNT")) signs in with
    # DefaultAzureCredential, which picks the user-assigned identity named by AZURE_CLIENT_ID.
    RTS_STORAGE     = "azure://${azurerm_storage_account.main.name}"
    AZURE_CLIENT_ID = azurerm_user_assigned_identity.functions.client_id

    RTS_STAC_URL        = var.stac_url
    RTS_YEARLY_SCHEDULE = var.yearly_schedule
    RTS_MODEL_CACHE     = var.model_cache_dir
    RTS_CODE_VERSION    = var.image_tag

    # Telemetry with the identity (Application Insights has local authentication disabled).
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.functions.client_id};Authorization=AAD"

    # A container brings its own files: no /home share from App Service storage.
    WEBSITES_ENABLE_APP_SERVICE_STORAGE = "false"
  }
}

resource "azurerm_service_plan" "functions" {
  #checkov:skip=CKV_AZURE_212:One instance is enough for a yearly batch job whose queue retries a failed site-year; three always-on instances would triple the plan's cost.
  #checkov:skip=CKV_AZURE_225:Zone redundancy needs at least three always-on instances (see CKV_AZURE_212).
  name                         = "${local.name}-plan"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  os_type                      = "Linux"
  sku_name                     = var.functions_plan_sku
  maximum_elastic_worker_count = local.elastic ? var.functions_max_instances : null
  tags                         = local.tags
}

resource "azurerm_linux_function_app" "main" {
  #checkov:skip=CKV_AZURE_221:The HTTP API (sites and records) is meant to be called from outside Azure; every call needs a function key.
  #checkov:skip=CKV_AZURE_56:The HTTP functions are read-only and need a function key (authLevel FUNCTION); App Service Authentication would need an Entra ID app registration this deployment does not own.
  name                = "${local.name}-func-${local.suffix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  service_plan_id     = azurerm_service_plan.functions.id

  # Identity-based AzureWebJobsStorage; a container app needs no Azure Files content share (which
  # would need a storage key).
  storage_account_name          = azurerm_storage_account.main.name
  storage_uses_managed_identity = true
  content_share_force_disabled  = true
  builtin_logging_enabled       = false

  functions_extension_version                    = "~4"
  https_only                                     = true
  ftp_publish_basic_authentication_enabled       = false
  webdeploy_publish_basic_authentication_enabled = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.functions.id]
  }

  site_config {
    always_on                        = !local.elastic
    elastic_instance_minimum         = local.elastic ? 1 : null
    app_scale_limit                  = local.elastic ? var.functions_max_instances : null
    runtime_scale_monitoring_enabled = local.elastic

    container_registry_use_managed_identity       = true
    container_registry_managed_identity_client_id = azurerm_user_assigned_identity.functions.client_id

    application_insights_connection_string = azurerm_application_insights.main.connection_string

    ftps_state              = "Disabled"
    http2_enabled           = true
    minimum_tls_version     = "1.2"
    scm_minimum_tls_version = "1.2"

    application_stack {
      docker {
        registry_url = "https://${azurerm_container_registry.main.login_server}"
        image_name   = var.functions_image_name
        image_tag    = var.image_tag
      }
    }
  }

  app_settings = local.functions_app_settings

  tags = local.tags

  # The image pull and the first start need the roles in place.
  depends_on = [
    azurerm_role_assignment.functions_acr_pull,
    azurerm_role_assignment.functions_blob,
    azurerm_role_assignment.functions_queue,
    azurerm_role_assignment.functions_table,
    azurerm_role_assignment.functions_telemetry,
  ]
}
