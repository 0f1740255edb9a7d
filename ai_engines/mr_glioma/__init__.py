"""MR glioma engine: T1/T1c/T2/FLAIR identified from headers, co-registered, BraTS-style
sub-regions segmented and measured, high- vs lower-grade glioma classified."""

# Model names live here, without torch, so the CLI can offer them without loading it.
MODEL_NAME = "mr_glioma_unet"  # segmentation U-Net (4 classes)
GRADE_MODEL_NAME = "mr_glioma_grade"  # classification head on the segmentation encoder
T1C_MODEL_NAME = "mr_glioma_unet_t1c"  # segmentation U-Net for studies with T1c alone (same input layout)
