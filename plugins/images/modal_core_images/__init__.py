"""Images for modal-core: decoding and transforms, image data sets, the shapes world and
its checker, the image evaluation suites and the offline quickstart. The two image
modality plugins (`modal_core_image_understanding`, `modal_core_vq_generation`) share
this package's image code."""
