"""Point-cloud modality plugin for modal-core (open3d I/O, point-patch encoder)."""
