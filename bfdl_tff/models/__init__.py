"""Keras models for B-FDL (paper 3.1: "a hybrid of the U-Net architecture and the ResNet-50
architecture"): a config-driven registry of functional models, plus loss and metric builders
shared by centralized and federated (TFF) training.

- :mod:`bfdl_tff.models.registry`: ``ModelConfig``, ``load_model_config``, ``list_models``,
  ``build_model``, ``uses_masks``, ``input_spec``.
- :mod:`bfdl_tff.models.architectures`: the builders (``small_cnn``, ``resnet50``,
  ``resnet50_unet``, ``resnet_unet_small``, ``keras_config``).
- :mod:`bfdl_tff.models.losses`: ``build_loss``, ``build_metrics``, ``positive_weights``.

TensorFlow is imported lazily by the builders, so importing this package is cheap.
"""
