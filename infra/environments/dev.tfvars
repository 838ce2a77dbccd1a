# Development: a Dedicated B1 plan (about a tenth of EP1's price; one instance, Always On), locally
# redundant storage, short retention. terraform plan -var-file=environments/dev.tfvars -var image_tag=<commit>
environment              = "dev"
location                 = "westeurope"
functions_plan_sku       = "B1"
storage_replication_type = "LRS"
blob_soft_delete_days    = 7
log_retention_days       = 30
training_preset          = "quick"
training_loso            = "none"

tags = {
  owner = "rtsmonitor-dev"
}
