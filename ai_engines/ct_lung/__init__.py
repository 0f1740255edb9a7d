"""CT lung engine: lungs and primary tumour (GTV) on axial chest CT (Primakov et al. 2022)."""

# Names and version live here, without torch, so the spec and the CLI can offer them without
# loading it.
ENGINE_NAME = "ct_lung"
ENGINE_VERSION = "1.4.2"  # the spec and the runtime engine both report this one
# 1.1.0: false-positive filter; 1.1.1: same results, box-restricted lesion search; 1.2.0: airway grown from the lumen (was often skipped); 1.3.0: extent model; 1.4.0: anatomical lesion checks, extent confined to the lesion's surroundings, RECIST in one piece, GTV_n labels, calibrated lesion probability; 1.4.1: lung-side threshold 0.35 (was 0.5); 1.4.2: pieces of one tube lined up along its axis are rejected together
MODEL_NAME = "ct_lung_unet"  # the detector: finds the lesions
EXTENT_MODEL_NAME = "ct_lung_unet_extent"  # same network, delineates the lesions the detector found
# The tumour U-Net's shape (a model card without an architecture gets this one).  context:
# neighbours either side of a slice; context_mm: their spacing (slices are chosen about this
# far apart whatever the slice thickness, so thin series still show 3-D shape).  Runtime
# code reads it from here: the engine never imports the training module.
ARCHITECTURE = {
    "in_channels": 5, "out_channels": 2, "base_channels": 8, "depth": 4, "dropout": 0.1,
    "context": 2, "context_mm": 3.0,
}
