"""Pieces shared by converters between modal-core and other frameworks' checkpoints.

`weights_io` reads and writes weights the way Hugging Face lays them out on disk
(safetensors or `.bin`, single or sharded with an index). Converters for a particular
model family live with the plugins of its modalities (the Janus ones in
`modal_core_images.janus`).
"""
