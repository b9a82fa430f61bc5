"""Models: a registry of builders by name (cnnlib's own CNNs, `torchvision/<name>`, `timm/<name>`), foreign
weights fitted into them without running code, and the anatomy of any network (layers, shapes, receptive fields).

    registry   register_model, get_model, list_models, default_preprocessing, first_conv; simple_cnn, resnet9
    zoo        torchvision and timm architectures by name: build, is_foreign, family_preprocessing
    onnx_graph the family "onnx": encode_graph, decode_graph, unsupported_operators, safe_node_names, to_torch,
               build_onnx, require_onnx (an imported ONNX graph stored as data, converted again by onnx2torch)
    weights    read_state_dict (.pth/.pt/.safetensors, weights_only), match_state_dict, load_weights_into
    anatomy    list_layers, conv_layer_names, default_gradcam_layer, first_layer_filters, filter_history,
               layer_kernels, feature_maps, penultimate_layer, penultimate_features, embed

A new model family goes in zoo (or a @register_model builder in registry); tests: tests/test_models.py,
tests/test_import.py, tests/test_interpret.py.
"""
from cnnlib.models.registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
