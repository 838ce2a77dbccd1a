# Production: Elastic Premium EP1 (scales out while the yearly queue drains), geo- and zone-redundant
# storage. terraform plan -var-file=environments/prod.tfvars -var image_tag=<commit>
environment              = "prod"
location                 = "westeurope"
functions_plan_sku       = "EP1"
functions_max_instances  = 10
storage_replication_type = "GZRS"
blob_soft_delete_days    = 14
log_retention_days       = 90
training_preset          = "paper"
training_loso            = "all"

tags = {
  owner = "rtsmonitor"
}
