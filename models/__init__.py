"""Network factories and registry, checkpoints and export.

Public API (import from the submodules; this package imports nothing heavy on its own):

* ``ductai.models.registry``: ``create_model(name, **kwargs)``, ``available_models(task)``,
  ``model_task(name)``, ``register_model(name, task)`` decorator.
* ``ductai.models.segmentation``: ``basic_unet``, ``unet``, ``segresnet``, ``attention_unet``,
  ``flexible_unet`` (MONAI, 2D, 1 -> 2 channels: duct, lesion; sigmoid).
* ``ductai.models.detection``: ``LesionDetector`` (MONAI RetinaNet, ATSS, hard negatives, no
  torchvision), ``naive_detector`` (the tutorial-style setup, for benchmarks),
  ``to_monai_boxes`` / ``from_monai_boxes`` (ductai ``[x0, y0, x1, y1]`` <-> MONAI
  ``[y0, x0, y1, x1]``).
* ``ductai.models.checkpoint``: ``save_checkpoint`` (atomic), ``load_checkpoint``
  (``weights_only=True``), ``rng_state`` / ``set_rng_state``, ``CheckpointError``.
* ``ductai.models.export``: ``export_torchscript``, ``export_onnx``.
"""
