"""Bone scintigraphy engine: whole-body planar bone scans (anterior + posterior) classified for
metastatic bone disease, with a Grad-CAM heat map (after Primakov, thesis ch. 7).

Runtime modules: :mod:`.views` (finding and orienting the two views), :mod:`.preprocess`
(the canvas the network reads), :mod:`.network` (CNN and Grad-CAM), :mod:`.engine`.
Training-only modules, never imported by the engine: :mod:`.synthetic`, :mod:`.train`,
:mod:`.evaluate`, :mod:`.dataset`.
"""

# Names live here, without torch, so the CLI and the spec can name them cheaply.
ENGINE_NAME = "bone_scan"
MODEL_NAME = "bone_scan_cnn"
