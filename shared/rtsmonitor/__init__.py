"""RTS monitor: retrogressive thaw slump mapping in Sentinel-2 imagery.

Implements the method of Rustemeyer et al. 2022, "Tracking rapid permafrost thaw through time:
exploring the potential of convolutional neural network based models", IGARSS 2022, pp. 3838-3841,
doi:10.1109/IGARSS46834.2022.9884869, as an operational monitoring service.
"""

__version__ = "0.1.0"
