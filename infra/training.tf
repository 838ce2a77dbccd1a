# The training job: docker/training.Dockerfile (python -m rtstrain.pipeline) as a Container Apps
# Job started by hand (az containerapp job start), with its own identity that may only write the
# models container. Settings are those training/rtstrain/pipeline.py reads.

resource "azurerm_container_app_environment" "main" {
  name                       = "${local.name}-cae"
  resource_group_name        = azurerm_resource_group.main.name
  location                   = azurerm_resource_group.main.location
  logs_destination           = "log-analytics"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  tags                       = local.tags
}

resource "azurerm_container_app_job" "training" {
  name                         = "${local.name}-training"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  container_app_environment_id = azurerm_container_app_environment.main.id

  replica_timeout_in_seconds = var.training_timeout_seconds
  # A failed run is looked at and started again by hand rather than retried for hours.
  replica_retry_limit = 0

  manual_trigger_config {
    parallelism              = 1
    replica_completion_count = 1
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.training.id]
  }

  registry {
    server   = azurerm_container_registry.main.login_server
    identity = azurerm_user_assigned_identity.training.id
  }

  template {
    container {
      name   = "training"
      image  = "${azurerm_container_registry.main.login_server}/${var.training_image_name}:${var.image_tag}"
      cpu    = var.training_cpu
      memory = var.training_memory

      # DefaultAzureCredential: sign in as the job's user-assigned identity.
      env {
        name  = "AZURE_CLIENT_ID"
        value = azurerm_user_assigned_identity.training.client_id
      }
      env {
        name  = "RTS_STORE"
        value = "azure://${azurerm_storage_account.main.name}"
      }
      env {
        name  = "RTS_STAC_URL"
        value = var.stac_url
      }
      env {
        name  = "RTS_LABELS_DIR"
        value = var.training_labels_dir
      }
      env {
        name  = "RTS_SITES"
        value = var.training_sites
      }
      env {
        name  = "RTS_PRESET"
        value = var.training_preset
      }
      env {
        name  = "RTS_LOSO"
        value = var.training_loso
      }
      env {
        name  = "RTS_MODEL_NAME"
        value = var.training_model_name
      }
      env {
        name  = "RTS_WORK_DIR"
        value = "/work"
      }
      # RTS_MODEL_VERSION is left unset on purpose: each run then publishes under its own UTC
      # start time; a fixed value here would make every run publish the same version.
      # RTS_RESUME too: /work is the replica's own disk, so a new run never finds one to resume
      # (that needs an Azure Files volume at /work; see training/README.md).
    }
  }

  tags = local.tags

  depends_on = [
    azurerm_role_assignment.training_acr_pull,
    azurerm_role_assignment.training_labels,
    azurerm_role_assignment.training_models,
  ]
}
