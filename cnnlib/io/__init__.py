"""Files in and out: the checkpoint (a plain dict, loaded with weights_only=True, validated with one true sentence
when it is not one), its metadata read without PyTorch, atomic writes, and the import and export of models.

    checkpoint  save_checkpoint, load_checkpoint, build_model, safe_torch_load, atomic_torch_save, checkpoint_summary
    validate    validate, read_path, summary, refusal: what makes a file a checkpoint (shared by both readers)
    metadata    read_meta, read_checkpoint, model_meta: the torch-free reader (restricted unpickler)
    files       atomic_write (temporary file, fsync, rename), WriteError
    webpage     esc, script_json, png, png_data_url, figure_data_url, img, page, CSP: one-file HTML pages (no requests)
    importer    import_weights (`cnnlib import`), import_hint, read_classes
    onnx_model  is_onnx, read_onnx, prepare_graph, onnx_network: .onnx files in (onnx2torch; the "onnx" family)
    export      export_checkpoint (`cnnlib export`: ONNX, TorchScript, safetensors), export_onnx, model_card

Tests: tests/test_checkpoint.py, tests/test_ckptmeta.py, tests/test_files.py, tests/test_import.py,
tests/test_export.py, tests/test_fuzz.py, tests/test_import_onnx.py.
"""
