"""CT lung engine: lungs and primary tumour (GTV) on axial chest CT (Primakov et al. 2022)."""

# Model names live here, without torch, so the CLI can offer them without loading it.
MODEL_NAME = "ct_lung_unet"  # the detector: finds the lesions
EXTENT_MODEL_NAME = "ct_lung_unet_extent"  # same network, delineates the lesions the detector found
