"""Training of the RTS U-Net of Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869).

TensorFlow/Keras is imported only inside this package (extra ``train``); the dataset, tiling and
normalisation code it shares with inference lives in :mod:`rtsmonitor`.
"""
