# The container registry both images are pushed to (by the image workflow, see docs/deploy.md) and
# pulled from by the Function App and the training job with their managed identities (AcrPull).

resource "azurerm_container_registry" "main" {
  # Basic SKU: two images, pulled a few times a year. The features below are Premium-only (about
  # ten times the price of Basic) or left to the subscription:
  #checkov:skip=CKV_AZURE_139:Private networking is Premium-only and the design has no virtual network; pulls need Entra ID (admin user disabled, no anonymous pull).
  #checkov:skip=CKV_AZURE_163:Image vulnerability scanning is Microsoft Defender for Containers, enabled per subscription, not on the registry resource.
  #checkov:skip=CKV_AZURE_164:Content trust was retired by the service (azurerm 5.0 removed trust_policy_enabled); images are pinned by commit tag.
  #checkov:skip=CKV_AZURE_165:Geo-replication is Premium-only; the images can be rebuilt from git in minutes.
  #checkov:skip=CKV_AZURE_166:Quarantine is Premium-only; only the CI workflow pushes images.
  #checkov:skip=CKV_AZURE_167:Retention of untagged manifests is Premium-only; CI pushes tagged images only.
  #checkov:skip=CKV_AZURE_233:Zone redundancy is Premium-only; the images can be rebuilt from git.
  #checkov:skip=CKV_AZURE_237:Dedicated data endpoints are Premium-only and matter only behind a firewall, which this registry does not have.
  name                = "${local.compact}acr${local.suffix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  sku                 = "Basic"
  admin_enabled       = false
  tags                = local.tags
}
