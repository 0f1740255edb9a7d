"""CT lung engine: lungs and primary tumour (GTV) on axial chest CT (Primakov et al. 2022)."""
