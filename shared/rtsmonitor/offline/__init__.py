"""Offline stand-ins for Microsoft Planetary Computer: a seeded scene generator and a local STAC API.

- :mod:`rtsmonitor.offline.synthetic`: a deterministic tundra landscape with retrogressive thaw
  slumps, rendered as Sentinel-2 L2A-like Cloud-Optimized GeoTIFFs (B02, B03, B04, B08, SCL) with
  STAC items shaped like Planetary Computer's, and Copernicus DEM GLO-30-like tiles.
- :mod:`rtsmonitor.offline.corpus`: builds a whole corpus (sites x summers x acquisitions + DEM).
- :mod:`rtsmonitor.offline.stacserver`: a small STAC API 1.0 over that folder, serving the COGs
  with HTTP range requests, so pystac-client and rasterio run unchanged against it.

The submodules are not imported here, so that importing one does not pull in the others.
"""
