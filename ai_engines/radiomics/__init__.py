"""Radiomics engine: IBSI 1 features per region and exact sliding-window GLCM feature maps.

Pure numpy/scipy/scikit-image/SimpleITK (torch only for the CUDA map path); no pyradiomics.
"""
