"""DICOM reading and checks, canonical image space, datalists, datasets and transforms.

Public API (import from the modules; this package imports nothing heavy on its own):

- ``dicom_reader.read_galactogram(path, pixel_spacing=None) -> Galactogram``
- ``image_files.read_image_file(path, pixel_spacing, laterality, view) -> Galactogram``
- ``intensity.normalize_intensity(stored, params, photometric=None)``: the intensity rule
- ``canonical.to_canonical(image, spacing_mm) -> (float32 image, CanonicalGeometry)``;
  ``CanonicalGeometry`` maps points, boxes, masks and heatmaps both ways, exactly
- ``datalist``: ``DatalistEntry``, ``split_by_patient``, ``write_datalist``, ``load_datalist``,
  ``datalist_from_simulation``; importers ``import_coco.import_coco``,
  ``import_masks.import_masks``
- ``inspect.inspect_paths`` / ``inspect.format_inspection`` (``ductai inspect``)
- ``errors``: ``ImageReadError`` and subclasses, ``DatalistError``
- ``datasets``: ``DatalistDataset`` (disk/memory cache), ``datalist_dataset``,
  ``simulated_dataset``; ``transforms``: ``AugmentConfig``, ``build_train_transform``,
  ``build_val_transform``, ``detection_collate``; ``sampling.CropSampler``; ``instances``
"""
