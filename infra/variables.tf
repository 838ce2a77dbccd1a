# Inputs. Values for each environment are in environments/<env>.tfvars; every variable is checked
# here so that a typo fails at plan time with a message naming the variable.

# --- naming and placement -------------------------------------------------------------------------

variable "name_prefix" {
  description = "Short project prefix for every resource name (2-10 lower-case letters and digits, starting with a letter)."
  type        = string
  default     = "rts"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.name_prefix))
    error_message = "name_prefix must be 2-10 lower-case letters and digits starting with a letter (it is part of the storage account and registry names, which allow nothing else)."
  }
}

variable "environment" {
  description = "Environment name, part of every resource name (2-5 lower-case letters and digits, e.g. dev, prod)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,4}$", var.environment))
    error_message = "environment must be 2-5 lower-case letters and digits starting with a letter, e.g. dev or prod."
  }
}

variable "location" {
  description = "Azure region name as the CLI writes it (e.g. westeurope, the region of the Planetary Computer data)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+[a-z0-9]*$", var.location))
    error_message = "location must be an Azure region name in lower case without spaces, e.g. westeurope (see az account list-locations -o table)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- storage ---------------------------------------------------------------------------------------

variable "storage_replication_type" {
  description = "Replication of the storage account holding sites, records, results and models (geo-redundant by default: the records are years of observations)."
  type        = string
  default     = "GZRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be one of LRS, ZRS, GRS, RAGRS, GZRS, RAGZRS."
  }
}

variable "blob_soft_delete_days" {
  description = "Days a deleted blob, blob version or container can still be restored (1-365)."
  type        = number
  default     = 14

  validation {
    condition     = var.blob_soft_delete_days >= 1 && var.blob_soft_delete_days <= 365 && floor(var.blob_soft_delete_days) == var.blob_soft_delete_days
    error_message = "blob_soft_delete_days must be a whole number of days between 1 and 365."
  }
}

variable "blob_version_retention_days" {
  description = "Days after which a superseded blob version is deleted (re-runs replace a site-year's products; older versions only cost storage)."
  type        = number
  default     = 30

  validation {
    condition     = var.blob_version_retention_days >= 1 && floor(var.blob_version_retention_days) == var.blob_version_retention_days
    error_message = "blob_version_retention_days must be a whole number of days, at least 1."
  }
}

# --- monitoring -----------------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the Log Analytics workspace and Application Insights, in days (30-730)."
  type        = number
  default     = 30

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 30 and 730."
  }
}

variable "log_daily_cap_gb" {
  description = "Daily ingestion cap of Application Insights, in GB (a guard against a logging loop)."
  type        = number
  default     = 1

  validation {
    condition     = var.log_daily_cap_gb > 0
    error_message = "log_daily_cap_gb must be greater than 0."
  }
}

# --- images ---------------------------------------------------------------------------------------

variable "functions_image_name" {
  description = "Repository of the Functions image in the registry (built from docker/functions.Dockerfile)."
  type        = string
  default     = "rtsmonitor-functions"

  validation {
    condition     = can(regex("^[a-z0-9]+([._/-][a-z0-9]+)*$", var.functions_image_name))
    error_message = "functions_image_name must be a lower-case image repository name, e.g. rtsmonitor-functions."
  }
}

variable "training_image_name" {
  description = "Repository of the training image in the registry (built from docker/training.Dockerfile)."
  type        = string
  default     = "rtsmonitor-training"

  validation {
    condition     = can(regex("^[a-z0-9]+([._/-][a-z0-9]+)*$", var.training_image_name))
    error_message = "training_image_name must be a lower-case image repository name, e.g. rtsmonitor-training."
  }
}

variable "image_tag" {
  description = "Tag of both images to run: the git commit they were built from (also stored in every record as RTS_CODE_VERSION)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid Docker tag (letters, digits, _ . -; at most 128) and not 'latest': pin the commit the images were built from."
  }
}

# --- the Functions app ----------------------------------------------------------------------------

variable "functions_plan_sku" {
  description = "App Service plan of the Function App: EP1-EP3 (Elastic Premium, scales out on queue length) or a Dedicated SKU (B1-B3, P0v3-P2v3: fixed size, Always On, cheaper for a few sites)."
  type        = string
  default     = "EP1"

  validation {
    condition     = contains(["EP1", "EP2", "EP3", "B1", "B2", "B3", "P0v3", "P1v3", "P2v3"], var.functions_plan_sku)
    error_message = "functions_plan_sku must be one of EP1, EP2, EP3 (Elastic Premium) or B1, B2, B3, P0v3, P1v3, P2v3 (Dedicated). Consumption and Flex Consumption do not run custom containers."
  }
}

variable "functions_max_instances" {
  description = "Most instances the Elastic Premium plan scales out to while the site-year queue drains (ignored on Dedicated SKUs)."
  type        = number
  default     = 10

  validation {
    condition     = var.functions_max_instances >= 1 && var.functions_max_instances <= 100
    error_message = "functions_max_instances must be between 1 and 100."
  }
}

variable "yearly_schedule" {
  description = "NCRONTAB (6 fields, UTC) of the yearly run that queues the summer just ended: RTS_YEARLY_SCHEDULE."
  type        = string
  default     = "0 0 6 1 10 *"

  validation {
    condition     = length(split(" ", trimspace(var.yearly_schedule))) == 6
    error_message = "yearly_schedule must be a 6-field NCRONTAB expression ({second} {minute} {hour} {day} {month} {day-of-week}), e.g. \"0 0 6 1 10 *\" for 1 October 06:00 UTC."
  }
}

variable "stac_url" {
  description = "STAC API with sentinel-2-l2a and cop-dem-glo-30: RTS_STAC_URL for the Functions and the training job."
  type        = string
  default     = "https://planetarycomputer.microsoft.com/api/stac/v1"

  validation {
    condition     = can(regex("^https://[^\\s]+$", var.stac_url))
    error_message = "stac_url must be an https:// URL."
  }
}

variable "model_cache_dir" {
  description = "Folder inside the Functions container where the live model bundle is cached: RTS_MODEL_CACHE."
  type        = string
  default     = "/tmp/rts-models"

  validation {
    condition     = startswith(var.model_cache_dir, "/")
    error_message = "model_cache_dir must be an absolute path inside the container."
  }
}

# --- the training job ----------------------------------------------------------------------------

variable "training_preset" {
  description = "Training preset: RTS_PRESET (paper, demo or quick; see training/rtstrain/train.py)."
  type        = string
  default     = "paper"

  validation {
    condition     = contains(["paper", "demo", "quick"], var.training_preset)
    error_message = "training_preset must be paper, demo or quick."
  }
}

variable "training_loso" {
  description = "Leave-one-site-out evaluation: RTS_LOSO (all or none)."
  type        = string
  default     = "all"

  validation {
    condition     = contains(["all", "none"], var.training_loso)
    error_message = "training_loso must be all or none."
  }
}

variable "training_sites" {
  description = "Comma-separated paper-site ids (or site-config paths inside the image) to train on: RTS_SITES."
  type        = string
  default     = "herschel,horton01,horton02,kolguev01,kolguev02,lena"

  validation {
    condition     = can(regex("^[A-Za-z0-9_./-]+(,[A-Za-z0-9_./-]+)*$", var.training_sites))
    error_message = "training_sites must be a comma-separated list of site ids or paths, without spaces."
  }
}

variable "training_model_name" {
  description = "Name the trained bundle is published under (models/<name>/<version>/): RTS_MODEL_NAME."
  type        = string
  default     = "rts-unet"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{0,62}$", var.training_model_name))
    error_message = "training_model_name must be 1-63 lower-case letters, digits, _ or -."
  }
}

variable "training_labels_dir" {
  description = "Where the training job finds the label files named as labels:NAME in the site configs (RTS_LABELS_DIR): blob:CONTAINER (the default: upload them to the labels container) or an absolute folder inside the container."
  type        = string
  default     = "blob:labels"

  validation {
    condition     = startswith(var.training_labels_dir, "/") || var.training_labels_dir == "blob:labels"
    error_message = "training_labels_dir must be blob:labels (the container this deployment creates) or an absolute path inside the container."
  }
}

variable "training_cpu" {
  description = "vCPUs of the training replica (Container Apps consumption: 0.25-4 in steps of 0.25)."
  type        = number
  default     = 4

  validation {
    condition     = var.training_cpu >= 0.25 && var.training_cpu <= 4 && floor(var.training_cpu * 4) == var.training_cpu * 4
    error_message = "training_cpu must be between 0.25 and 4 in steps of 0.25."
  }
}

variable "training_memory" {
  description = "Memory of the training replica; Container Apps consumption needs 2 GiB per vCPU (e.g. 8Gi for 4 vCPUs)."
  type        = string
  default     = "8Gi"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?Gi$", var.training_memory))
    error_message = "training_memory must be a size in Gi, e.g. 8Gi."
  }
}

variable "training_timeout_seconds" {
  description = "Longest a training run may take before the replica is stopped, in seconds."
  type        = number
  default     = 21600

  validation {
    condition     = var.training_timeout_seconds >= 600 && var.training_timeout_seconds <= 86400
    error_message = "training_timeout_seconds must be between 600 (10 minutes) and 86400 (24 hours)."
  }
}
