# What the image workflow, the deploy guide and an operator need after an apply.

output "resource_group_name" {
  description = "Resource group holding everything."
  value       = azurerm_resource_group.main.name
}

output "storage_account_name" {
  description = "Storage account of sites, records, results and models (RTS_STORAGE = azure://<name>)."
  value       = azurerm_storage_account.main.name
}

output "function_app_name" {
  description = "Name of the Function App."
  value       = azurerm_linux_function_app.main.name
}

output "function_app_hostname" {
  description = "Host name of the Function App (HTTP API under https://<hostname>/api/)."
  value       = azurerm_linux_function_app.main.default_hostname
}

output "acr_login_server" {
  description = "Login server of the container registry the images are pushed to."
  value       = azurerm_container_registry.main.login_server
}

output "acr_name" {
  description = "Name of the container registry (az acr login --name)."
  value       = azurerm_container_registry.main.name
}

output "training_job_name" {
  description = "Name of the training Container Apps Job (az containerapp job start --name ...)."
  value       = azurerm_container_app_job.training.name
}

output "functions_identity_client_id" {
  description = "Client id of the Function App's user-assigned identity."
  value       = azurerm_user_assigned_identity.functions.client_id
}

output "training_identity_client_id" {
  description = "Client id of the training job's user-assigned identity."
  value       = azurerm_user_assigned_identity.training.client_id
}
